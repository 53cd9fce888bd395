"""Convert the released UFO checkpoint into a ppufo checkpoint for a config's model.

python tools/convert_weights.py -c configs/ufo_vitl.yaml --input allinone_vitlarge.pdmodel \
    --output pretrained/ufo_vitl_released [-o Global.released_heads.vehicle=task3]

Writes <output>.pdparams + .pdstates (weights only, no classifiers): the prefix works as
Global.pretrained_model for eval, export and training (classifiers then start fresh), and as
Arch.Backbone.pretrained. Loading the .pdmodel directly does the same conversion in memory.
"""
import os
import sys

from ..utils.config import cli_config
from ..utils.errors import ConfigError


def convert(config, src, prefix):
    """Write ``src`` (the released checkpoint) as ppufo checkpoint ``prefix``; returns report lines."""
    import paddle

    from ..arch.multitask import build_model
    from ..arch.released import describe, group_counts, head_mapping, is_reference, reference_heads
    from ..io.weights import filter_state, read_weights
    from ..utils.checkpoint import save_checkpoint
    state, path = read_weights(src, "--input")
    if not is_reference(state):
        raise ConfigError(f"--input: {path}: is {describe(state)}; expected the released UFO checkpoint "
                          f"(backbone.*, heads.task1..task4.bottleneck.0.*)")
    with paddle.LazyGuard():  # only the shapes are needed: no ViT-L weights are allocated
        model = build_model(config)
    out = filter_state(model, state, path, "--input")
    mapping = head_mapping(model.released_heads, model.task_names, reference_heads(state))
    save_checkpoint(prefix, out, states={"iteration": 0, "converted_from": os.path.abspath(path),
                                         "released_heads": mapping})
    unused = [h for h in reference_heads(state) if h not in mapping.values()]
    lines = [f"{path}: {describe(state)}", f"-> {prefix}.pdparams: {len(out)} tensors ({group_counts(out)})",
             f"backbone: {sum(k.startswith('backbone.') for k in out)} tensors, names unchanged"]
    lines += [f"{t}: neck <- heads.{h}.bottleneck.0 ({sum(k.startswith(f'heads.{h}.') for k in state)} tensors)"
              for t, h in mapping.items()]
    lines.append("not used: " + (", ".join(f"heads.{h}" for h in unused) or "none"))
    lines.append("no classifiers: training from it starts them fresh")
    return lines


def main():
    def extra(p):
        p.add_argument("--input", required=True, help="the released checkpoint, e.g. allinone_vitlarge.pdmodel")
        p.add_argument("--output", required=True, help="checkpoint prefix to write (<output>.pdparams)")
    args, config = cli_config("convert the released UFO checkpoint to ppufo", extra)
    from ..utils.device import setup_device
    try:
        setup_device(config, device="cpu")
        lines = convert(config, args.input, args.output)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
