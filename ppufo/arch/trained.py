"""A config's model with Global.pretrained_model's weights: build_model composed with
io.weights (which reads the file and applies it through the model's checkpoint_filter, or for the
weights a training run starts from its pretrained_filter: a supernet takes an All-in-One there)."""
import os

from ..io.weights import load_model, load_weights, weights_file
from ..utils.errors import ConfigError
from ..utils.logger import get_logger
from .multitask import build_model, num_classes_from_state
from .released import geometry, geometry_text, group_counts, head_mapping, is_reference, reference_heads

WHAT = "Global.pretrained_model"
HOW = ("make an All-in-One checkpoint with `python tools/train.py -c configs/quickstart.yaml` (it writes "
       "output/quickstart/latest; configs/ufo_vitl.yaml writes output/ufo_vitl/latest), or give the released "
       "allinone_vitlarge.pdmodel")


def load_trained_model(config):
    """The model of ``config`` with the weights of Global.pretrained_model (a ppufo checkpoint,
    or the released UFO checkpoint converted on the fly), heads sized from the checkpoint, in
    eval mode; a supernet is set to Supernet.eval_subnet."""
    path = config["Global"]["pretrained_model"]
    if not path:
        raise ConfigError(f"{WHAT}: required (a checkpoint prefix, e.g. output/quickstart/latest, "
                          f"or the released allinone_vitlarge.pdmodel)")
    tasks = list(config["Tasks"])
    model = load_model(lambda state: build_model(config, num_classes_from_state(state, tasks)), path, what=WHAT)
    if hasattr(model, "set_subnets"):
        model.set_subnets(model.space.resolve(config["Supernet"]["eval_subnet"], "Supernet.eval_subnet"))
    model.eval()
    return model


def check_source(config):
    """Refuse a Global.pretrained_model file that is not there, saying how to make one (a run
    checks before it writes demo data)."""
    source = config["Global"]["pretrained_model"]
    if source and isinstance(source, str) and not os.path.isfile(path := weights_file(source, WHAT)):
        raise ConfigError(f"{WHAT}: {path} not found; {HOW}; or -o {WHAT}=null to train "
                          f"from the initial weights")


def load_pretrained(model, config):
    """Initialise a training ``model`` from Global.pretrained_model: a ppufo checkpoint (an
    All-in-One one into a supernet: each MLP into every FFN path) or the released UFO checkpoint.
    Every tensor but the classifiers and the heads of tasks the file does not have must load (they
    start fresh where the file has none or other class counts), and the file may hold no backbone
    tensor the model has no place for; else a ConfigError lists them, unless
    Global.allow_partial_load (a warning). Returns a line saying what was loaded."""
    source = config["Global"]["pretrained_model"]
    if not source:
        return from_scratch(model, config)
    check_source(config)
    loaded = load_weights(model, source, strict=False, what=WHAT, pretrained=True, report=False)  # said below
    mapped = ""
    if is_reference(loaded.raw):
        mapping = head_mapping(model.released_heads, model.task_names, reference_heads(loaded.raw))
        mapped = " (released UFO checkpoint; necks " + ", ".join(f"{t}<-{h}" for t, h in mapping.items()) + ")"
    own = model.state_dict()
    done = [k for k in own if k in loaded.state]
    fresh = [k for k in own if k not in loaded.state]
    new_tasks = tuple(f"heads.{t}." for t in model.task_names
                      if not any(k.startswith(f"heads.{t}.") for k in loaded.state))
    left = [k for k in fresh if ".classifier." not in k and not k.startswith(new_tasks)]  # a new task starts fresh
    extra = [k for k in loaded.unexpected if k.startswith("backbone.")]  # other tasks' heads are not used
    if left or extra:
        problem = _partial(loaded, own, left, extra)
        if not config["Global"]["allow_partial_load"]:
            raise ConfigError(problem + "; set Global.allow_partial_load=true to train anyway (the tensors "
                              "left start fresh, the extra ones are not used)")
        get_logger().warning(problem + " (Global.allow_partial_load)")
    return (f"{WHAT}: loaded pretrained weights from {loaded.path}{mapped}: {len(done)} tensors "
            f"({group_counts(done)}); {len(fresh)} start fresh" + (f": {group_counts(fresh)}" if fresh else ""))


def _partial(loaded, own, left, extra):
    """What a partial load leaves fresh and what the file holds beyond the model; both backbones
    where they differ (a deeper or narrower ViT)."""
    def listing(keys):
        return ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
    parts = ([f"leaves {len(left)} tensors at their initial values ({group_counts(left)}): {listing(left)}"]
             if left else [])
    parts += ([f"holds {len(extra)} backbone tensors the model has no place for: {listing(extra)}"] if extra else [])
    text = f"{WHAT}: {loaded.path} " + "; it ".join(parts)
    file_g, model_g = geometry(loaded.raw), geometry(own)
    if file_g != model_g:
        text += f" (the file's backbone: {geometry_text(file_g)}; the model's: {geometry_text(model_g)})"
    return text


def from_scratch(model, config):
    """The line a run without Global.pretrained_model logs; a supernet without any start warns."""
    backbone = config["Arch"]["Backbone"].get("pretrained")
    if hasattr(model, "space") and not backbone:
        get_logger().warning(f"{WHAT} is null: the supernet trains from scratch (random weights). The article "
                             f"starts it from a trained All-in-One model: {HOW}; then -o {WHAT}=<its prefix>")
    return f"{WHAT}: none; the model starts from its initial weights" + (
        f" (the backbone from Arch.Backbone.pretrained={backbone})" if backbone else "")
