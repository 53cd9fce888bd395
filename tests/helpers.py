"""Shared test helpers (importable from every test folder: pytest.ini puts tests/ on the path)."""
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
QUICK_SETS = ["market1501", "veri776", "sop", "ms1m", "faces_val"]
EVAL_ONLY_SETS = ["dukemtmc", "msmt17", "vehicleid", "veriwild"]  # quickstart test sets only


def tiny_config(demo_root, output_dir, overrides=()):
    """The quickstart config shrunk to run a step in well under a second."""
    from ppufo.utils.config import load_config
    base = ["Global.data_root=" + demo_root, "Global.output_dir=" + str(output_dir),
            "Global.generate_demo_data=false", "Global.image_shape=[3,32,32]",
            "DataLoader.Train.transforms.0.Resize.size=[32,32]", "Global.max_iters=4",
            "Global.log_interval=1", "Global.use_visualdl=false", "Arch.Backbone.depth=2",
            "DataLoader.Train.num_workers=0", "DataLoader.Eval.num_workers=0",
            "Tasks.face.batch_size=8", "Tasks.person.batch_size=8", "Tasks.vehicle.batch_size=8",
            "Tasks.product.batch_size=8"]
    return load_config(os.path.join(ROOT, "configs/quickstart.yaml"), base + list(overrides))


def tiny_supernet_config(demo_root, tmp_path, *extra):
    """The supernet quickstart shrunk the same way (embed 48, depth 3, depths 2-3), from scratch
    (Global.pretrained_model=null: its default, the quickstart All-in-One, is not trained here)."""
    from ppufo.utils.config import load_config
    return load_config(f"{ROOT}/configs/supernet_quickstart.yaml", [
        f"Global.data_root={demo_root}", f"Global.output_dir={tmp_path}/out", "Global.generate_demo_data=false",
        "Global.pretrained_model=null",
        "Global.image_shape=[3,32,32]", "DataLoader.Train.transforms.0.Resize.size=[32,32]",
        "Global.max_iters=2", "Global.log_interval=1", "Global.use_visualdl=false",
        "DataLoader.Train.num_workers=0", "DataLoader.Eval.num_workers=0", "Arch.Backbone.embed_dim=48",
        "Arch.Backbone.depth=3", "Arch.Backbone.depths=[2,3]", "Arch.Backbone.drop_path_rate=0.0",
        "Tasks.face.batch_size=8", "Tasks.person.batch_size=8", "Tasks.vehicle.batch_size=8",
        "Tasks.product.batch_size=8", *extra])


def tree_digest(root):
    """sha256 of every file's relative path and bytes under ``root``: equal trees, equal digests."""
    import hashlib
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, root).encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def losses_of(trainer, steps):
    """The losses of the next ``steps`` training steps."""
    out = []
    for it, batch in enumerate(trainer.loader, start=trainer.start_iter + 1):
        out.append(trainer.train_step(batch, it)["loss"])
        if len(out) == steps:
            break
    return out


def git_clone(dest):
    """(folder, environment) of a `git clone` of the repository's committed HEAD into ``dest``, a new
    folder: what a new user gets, without untracked or ignored files (data/, output/) and without
    anything that exists only on this machine. The environment's Python imports the clone's own
    ppufo (not the editable install's). Uncommitted changes are not in it: commit before running."""
    import subprocess
    import sys
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", ROOT, str(dest)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(dest))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return str(dest), env


def readme_command(marker):
    """The README line that starts with ``marker`` (e.g. "python tools/train.py"), its comment cut off."""
    with open(os.path.join(ROOT, "README.md")) as f:
        for line in f:
            if line.startswith(marker):
                return line.split("#")[0].strip()
    raise AssertionError(f"README.md has no line starting with {marker!r}")


def bomb_png(width=20000, height=20000):
    """A 1-bit greyscale PNG of 60-odd bytes whose header declares width x height: past Pillow's
    decompression-bomb limit (2 x MAX_IMAGE_PIXELS = 179 MP) at the default 20000x20000."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
            + chunk(b"IEND", b""))


def autocast_now():
    """(enable, dtype, level) of the innermost paddle.amp.auto_cast, None outside any: Paddle
    records it on a CPU too, where autocast then casts nothing (the gpu_amp fixture of
    tests/unit/engine/conftest.py forces ppufo's GPU path)."""
    import sys
    s = sys.modules["paddle.amp.auto_cast"].amp_state()  # paddle.amp.auto_cast is the function
    return (s["enable"], s["dtype"], s["level"]) if s else None


# the tiny model quantised as ppufo-quantize does, on 16 images (tests/unit/slim)
TINY_QUANT = ["Quant.num_images=16", "Quant.batch_size=8", "Export.task=person",
              "Tasks.person.test_sets=[{name: Market1501, root: market1501}]"]


def quantized_tiny(demo_root, out):
    """(config, model, float folder, int8 folder, calibration images) of a random tiny ViT (seed 0)."""
    import paddle
    from ppufo.arch import build_model
    from ppufo.slim.quantize import quantize_task
    cfg = tiny_config(demo_root, out, TINY_QUANT + [f"Export.save_dir={out / 'inf'}"])
    paddle.seed(0)
    model = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    model.eval()
    float_dir = str(out / "inf" / "person")
    q, images = quantize_task(model, cfg, "person", float_dir)
    return cfg, model, float_dir, q, images
