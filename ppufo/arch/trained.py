"""A config's model with Global.pretrained_model's weights: build_model composed with
io.weights (which reads the file and applies it through MultiTaskModel.checkpoint_filter)."""
from ..io.weights import load_model, load_weights
from ..utils.errors import ConfigError
from .multitask import build_model, num_classes_from_state
from .released import group_counts, head_mapping, is_reference, reference_heads

WHAT = "Global.pretrained_model"


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


def load_pretrained(model, config):
    """Initialise a training ``model`` from Global.pretrained_model: a ppufo checkpoint (keys it
    lacks are logged and start fresh) or the released UFO checkpoint (every backbone and neck
    key required; the classifiers start fresh). Returns a line saying what was loaded."""
    loaded = load_weights(model, config["Global"]["pretrained_model"], strict=False, what=WHAT)
    mapped = ""
    if is_reference(loaded.raw):
        mapping = head_mapping(model.released_heads, model.task_names, reference_heads(loaded.raw))
        mapped = " (released UFO checkpoint; necks " + ", ".join(f"{t}<-{h}" for t, h in mapping.items()) + ")"
    own = model.state_dict()
    done = [k for k in own if k in loaded.state]
    fresh = [k for k in own if k not in loaded.state]
    return (f"{WHAT}: loaded pretrained weights from {loaded.path}{mapped}: {len(done)} tensors "
            f"({group_counts(done)}); {len(fresh)} start fresh" + (f": {group_counts(fresh)}" if fresh else ""))
