"""One-for-All model: the ViT supernet + one head per task, each task on its own active subnet.

The mixed batch is split by task and each slice runs the backbone on that task's subnet (a
task's FFN path only exists for that task). The backbone has no batch statistics, so this
equals one pass over the mixed batch whenever the subnets coincide.
"""
import re

from ..utils.errors import ConfigError
from .multitask import ARCHS, MultiTaskModel
from .released import check_format, describe, head_mapping, is_reference, reference_heads, rename

PLAIN = re.compile(r"backbone\.blocks\.\d+\.(attn\.qkv|mlp)\.")  # a plain ViT's block: an All-in-One backbone


def is_allinone(state):
    """Whether ``state`` is an All-in-One checkpoint (ppufo's or the released one), not a supernet's."""
    return is_reference(state) or any(PLAIN.match(k) for k in state)


@ARCHS.register
class SupernetMultiTaskModel(MultiTaskModel):
    def __init__(self, backbone, heads):
        if not hasattr(backbone, "space"):
            raise ConfigError(f"Arch: SupernetMultiTaskModel needs a supernet backbone (ViTSupernet), "
                              f"got {type(backbone).__name__}")
        super().__init__(backbone, heads)
        self.space = backbone.space
        largest = self.space.largest()
        self.subnets = {t: largest for t in self.task_names}

    def set_subnets(self, subnets):
        """{task: Subnet} (a Subnet applies to every task); each is checked against the space."""
        if not isinstance(subnets, dict):
            subnets = {t: subnets for t in self.task_names}
        for t, s in subnets.items():
            if t not in self.task_names:
                raise ConfigError(f"unknown task '{t}'; model tasks: {self.task_names}")
            self.subnets[t] = self.space.validate(s, where=f"subnet of task '{t}'")

    def backbone_features(self, images, task_sizes):
        out, start = [], 0
        for t, n in task_sizes:  # a task with no images this step is skipped by forward()
            out.append(self.backbone(images[start:start + n], t, self.subnets[t]) if n else None)
            start += n
        return out

    def checkpoint_filter(self, state, source):
        """A supernet checkpoint, as MultiTaskModel takes it. An All-in-One checkpoint is refused:
        eval, extraction and search read a trained supernet; training starts one from it
        (pretrained_filter)."""
        check_format(state, source)
        if is_allinone(state):
            raise ConfigError(
                f"is an All-in-One checkpoint ({describe(state)}); a supernet checkpoint is expected (the "
                f"latest one its training writes into Global.output_dir). To start a supernet from this "
                f"All-in-One checkpoint use Global.pretrained_model when training: python tools/train.py "
                f"-c <this supernet config> -o Global.pretrained_model={source}")
        return super().checkpoint_filter(state, source)

    def pretrained_filter(self, state, source):
        """The weights a training run starts from (Global.pretrained_model). An All-in-One checkpoint
        (ppufo's, or the released one with its necks renamed as Global.released_heads says): the
        backbone through ViTSupernet.checkpoint_filter (each MLP copied into every FFN path), necks
        and heads as they are, a classifier whose class count differs left out (it starts fresh).
        A supernet checkpoint as checkpoint_filter takes it."""
        check_format(state, source)
        if not is_allinone(state):
            return super().checkpoint_filter(state, source)
        if is_reference(state):
            state = rename(state, head_mapping(self.released_heads, self.task_names, reference_heads(state)))[0]
        own = self.state_dict()
        out = {"backbone." + k: v for k, v in self.backbone.checkpoint_filter(state, source).items()}
        for k, v in state.items():
            if not k.startswith("backbone.") and not (
                    ".classifier." in k and k in own and list(v.shape) != list(own[k].shape)):
                out[k] = v
        return out

    def _ffns(self):
        return [block.ffn for block in self.backbone.blocks]

    def task_parameters(self, task):
        """The task's head, and in every block its own FFN path and its mixing logit."""
        own = list(super().task_parameters(task))
        for ffn in self._ffns():
            own += list(ffn.task[task].parameters()) + [ffn.mix_logit[ffn.tasks.index(task)]]
        return own

    def shared_path_parameters(self):
        """The shared FFN path of every block (Supernet.shared_lr_mult)."""
        return [p for ffn in self._ffns() for p in ffn.shared.parameters()]

    def shared_parameters(self):
        """The backbone less the FFN paths and mixing logits: embeddings, attention, norms."""
        paths = {id(p) for ffn in self._ffns() for p in ffn.parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in paths]
