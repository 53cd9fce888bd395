"""All-in-One model: one backbone pass over the mixed batch, one neck + classifier per task."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..utils.errors import ConfigError
from ..utils.registry import Registry
from .backbone import build_backbone
from .head import HEADS, NECKS
from .released import check_format, is_reference, to_ppufo

ARCHS = Registry("arch")


class TaskHead(nn.Layer):
    """BN neck -> embedding (the retrieval feature); margin classifier for training (None in
    a model built only to embed, whose logits are then None)."""

    def __init__(self, neck, classifier=None):
        super().__init__()
        self.neck = neck
        self.classifier = classifier

    def forward(self, feat, label=None):
        emb = self.neck(feat)
        logits = self.classifier(emb, label) if self.classifier is not None else None
        return {"feat": feat, "embedding": emb, "logits": logits}


@ARCHS.register
class MultiTaskModel(nn.Layer):
    released_heads = {}  # Global.released_heads, set by build_model: see checkpoint_filter

    def __init__(self, backbone, heads):
        super().__init__()
        self.backbone = backbone
        self.task_names = list(heads)
        self.heads = nn.LayerDict(heads)

    def forward(self, images, task_sizes, labels=None):
        """images: the mixed batch, tasks contiguous in ``task_sizes`` order ([(task, n), ...]).
        Returns {task: {"feat", "embedding", "logits"}} for tasks with n > 0."""
        names = [t for t, n in task_sizes]
        sizes = [n for t, n in task_sizes]
        parts = self.backbone_features(images, task_sizes)
        label_parts = (paddle.split(labels, sizes) if len(sizes) > 1 else [labels]) \
            if labels is not None else [None] * len(sizes)
        return {t: self.heads[t](f, y) for t, f, y, n in zip(names, parts, label_parts, sizes) if n > 0}

    def backbone_features(self, images, task_sizes):
        """Per-task slices of the backbone feature: one pass over the whole mixed batch."""
        feats = self.backbone(images)
        return paddle.split(feats, [n for _, n in task_sizes]) if len(task_sizes) > 1 else [feats]

    def embed(self, images, task, normalize=True):
        """Retrieval feature of ``task`` for a batch of that task's images: the backbone under the
        caller's autocast (evaluation in the training precision, amp.eval_autocast), the neck and
        the feature in fp32 with autocast off, as in training (amp.py: BN statistics stay fp32)."""
        if task not in self.task_names:
            raise ConfigError(f"unknown task '{task}'; model tasks: {self.task_names}")
        feat, = self.backbone_features(images, [(task, images.shape[0])])
        with paddle.amp.auto_cast(enable=False):  # the backbone may run under autocast, the neck never
            emb = self.heads[task].neck(feat if feat.dtype == paddle.float32 else feat.astype("float32"))
            return F.normalize(emb, axis=1) if normalize else emb

    def task_parameters(self, task):
        return self.heads[task].parameters()

    def shared_parameters(self):
        return self.backbone.parameters()

    def checkpoint_filter(self, state, source):
        """A ppufo checkpoint as it is; the released UFO checkpoint renamed (released.to_ppufo);
        any other layout refused, saying what it is."""
        check_format(state, source)
        return to_ppufo(state, self)[0] if is_reference(state) else state


def build_model(config, num_classes=None):
    """Build the Arch section for the tasks in ``config["Tasks"]``.

    num_classes: {task: number of training identities/classes}; a task without one (or
    num_classes None) gets no classifier: the model embeds (eval, export) but cannot train it.
    """
    num_classes = num_classes or {}
    arch = dict(config["Arch"])
    name = arch.pop("name", None)
    if name is None:
        raise ConfigError("Arch: missing 'name' (known: %s)" % ", ".join(ARCHS.names()))
    cls = ARCHS.get(name)
    backbone_cfg = arch.pop("Backbone", None)
    if backbone_cfg is None:
        raise ConfigError("Arch.Backbone: missing (e.g. {name: ViT_base_patch16})")
    if arch:
        raise ConfigError(f"Arch: unknown key(s) {sorted(arch)}; allowed: ['name', 'Backbone']")
    image_hw = list(config["Global"]["image_shape"][1:])
    backbone = build_backbone(backbone_cfg, img_size=image_hw, tasks=list(config["Tasks"]))
    heads = {}
    for task, tcfg in config["Tasks"].items():
        neck = NECKS.build(tcfg["neck"], where=f"Tasks.{task}.neck", in_dim=backbone.out_dim)
        clf = None if num_classes.get(task) is None else HEADS.build(
            tcfg["head"], where=f"Tasks.{task}.head", in_dim=neck.out_dim, num_classes=num_classes[task])
        heads[task] = TaskHead(neck, clf)
    model = cls(backbone, heads)
    model.released_heads = dict(config["Global"]["released_heads"])
    return model


def num_classes_from_state(state, tasks):
    """Classifier sizes stored in a checkpoint, so eval/export need not parse training sets;
    None for a task whose classifier is not in it. {} for a state that is not a ppufo checkpoint
    (the released one holds no classifiers; other layouts are refused when loaded)."""
    if is_reference(state) or not any(k.startswith("heads.") for k in state):
        return {}
    out = {}
    for t in tasks:
        if not any(k.startswith(f"heads.{t}.") for k in state):
            raise ConfigError(f"checkpoint has no head for task '{t}'; tasks in it: "
                              f"{sorted({k.split('.')[1] for k in state if k.startswith('heads.')})}")
        key = f"heads.{t}.classifier.weight"
        out[t] = int(state[key].shape[-1]) if key in state else None
    return out
