"""TIPC check: features saved by predict_rec.py (Global.save_features) vs the training code's.

python test_tipc/compare_features.py -c <run>/config.yaml -o Global.pretrained_model=<run>/latest \
    --task person --features <run>/infer_mkldnn_True.npz [--atol 1e-4]
python test_tipc/compare_features.py ... --features <run>/infer_..._int8.npz --min_mean_cosine 0.98 --min_cosine 0.95

The dygraph side loads the model the way tools/export_model.py does and preprocesses the
same images with the training code's eval transforms, so a preprocessing mismatch in the
deploy path fails here too. A float model must equal it: exit code 1 when max |diff| > atol.
An int8 model (ppufo-quantize) cannot: it is checked by the cosine of each image's feature to the
float one instead, exit code 1 when their mean is below --min_mean_cosine or any is below
--min_cosine. Prints one line with both measures.
"""
import os
import random
import sys


import numpy as np

from ppufo.slim.report import cosine
from ppufo.utils.config import load_config, parse_args
from ppufo.utils.errors import ConfigError


def dygraph_features(config, task, paths, batch_size=16):
    import paddle
    from PIL import Image

    from ppufo.arch.trained import load_trained_model
    from ppufo.data.loader import eval_transforms
    from ppufo.utils.device import setup_device
    setup_device(config, device="cpu")
    model = load_trained_model(config)
    if task not in model.task_names:
        raise ConfigError(f"--task {task}: not a task of this model; tasks: {model.task_names}")
    tf = eval_transforms(config)
    out = []
    with paddle.no_grad():
        for s in range(0, len(paths), batch_size):
            x = np.stack([tf(Image.open(p).convert("RGB"), random.Random(0)) for p in paths[s:s + batch_size]])
            out.append(model.embed(paddle.to_tensor(x), task).numpy())
    return np.concatenate(out)


def main():
    def extra(p):
        p.add_argument("--task", required=True)
        p.add_argument("--features", required=True, help=".npz written by predict_rec.py (features, paths)")
        p.add_argument("--atol", type=float, default=None, help="float model: max |diff| allowed (default 1e-4)")
        p.add_argument("--min_mean_cosine", type=float, default=None,
                       help="int8 model: lowest mean cosine to the float features allowed (instead of --atol)")
        p.add_argument("--min_cosine", type=float, default=None,
                       help="int8 model: lowest cosine of any one image allowed (with --min_mean_cosine)")
    a = parse_args("compare inference features with dygraph", extra)
    cosine_mode = a.min_mean_cosine is not None
    if cosine_mode and a.atol is not None:
        sys.exit("error: --atol (a float model) and --min_mean_cosine (an int8 model) exclude each other")
    if a.min_cosine is not None and not cosine_mode:
        sys.exit("error: --min_cosine needs --min_mean_cosine")
    try:
        config = load_config(a.config, a.override)
        if not os.path.isfile(a.features):
            raise FileNotFoundError(f"--features {a.features} not found (Global.save_features of predict_rec.py)")
        saved = np.load(a.features)
        paths = [str(p) for p in saved["paths"]]
        ref = dygraph_features(config, a.task, paths)
    except (ConfigError, FileNotFoundError, KeyError) as e:
        sys.exit(f"error: {e}")
    if saved["features"].shape != ref.shape:
        sys.exit(f"error: {a.features} holds features {saved['features'].shape}, dygraph gives {ref.shape}")
    diff = float(np.abs(saved["features"] - ref).max())
    cos = cosine(saved["features"], ref)
    if cosine_mode:
        floor = a.min_cosine if a.min_cosine is not None else -1.0
        ok = cos["mean"] >= a.min_mean_cosine and cos["min"] >= floor
        limit = f"min mean {a.min_mean_cosine:g}" + (f", min each {a.min_cosine:g}" if a.min_cosine is not None else "")
        print(f"{'PASS' if ok else 'FAIL'}: {len(paths)} images, cosine to dygraph mean {cos['mean']:.5f}, min "
              f"{cos['min']:.5f} ({limit}); max |inference - dygraph| = {diff:.2e} for {a.features}")
    else:
        atol = 1e-4 if a.atol is None else a.atol
        ok = diff <= atol
        print(f"{'PASS' if ok else 'FAIL'}: {len(paths)} images, max |inference - dygraph| = {diff:.2e} "
              f"(atol {atol:g}); cosine mean {cos['mean']:.7f} for {a.features}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
