"""Bytes one checkpoint save reads and writes: the quickstart model (configs/quickstart.yaml), after
one training step (so the optimizer holds its state), saved through its CheckpointHook once as a
save_interval save before the end and once as the end's save, counted from /proc/self/io (Linux)
around each: wchar/rchar are the bytes this process passed to write()/read() (page cache or not),
write_bytes/read_bytes what reached the block layer. "checkpoint" is the size of the files the
save wrote (.pdparams + .pdopt + .pdstates, and a pointer).

python benchmark/checkpoint_io.py [--data_root data/demo] [--out output/checkpoint_io]
"""
import argparse
import os
import shutil
import tempfile


def proc_io():
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def measured(fn):
    before = proc_io()
    fn()
    after = proc_io()
    return {k: after[k] - before[k] for k in ("wchar", "rchar", "write_bytes", "read_bytes")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_root", help="the quickstart's demo sets (default: generated into a temporary folder)")
    p.add_argument("--out", help="output folder (default: a temporary one)")
    a = p.parse_args()
    import ppufo  # noqa: F401  (before paddle: MKL settings)
    tmp = tempfile.mkdtemp(prefix="ckpt_io_")
    try:
        measure(a, tmp)
    finally:
        shutil.rmtree(tmp)


def measure(a, tmp):
    from ppufo.engine import build_trainer
    from ppufo.engine.hooks import CheckpointHook
    from ppufo.utils.config import load_config
    root = a.data_root
    if root is None:
        from ppufo.demo import write_all
        root = os.path.join(tmp, "demo")
        write_all(root, seed=0, sets=["market1501", "veri776", "sop", "ms1m", "faces_val"])
    out = a.out or os.path.join(tmp, "out")
    cfg = load_config("configs/quickstart.yaml", [f"Global.data_root={root}", f"Global.output_dir={out}",
                                                  "Global.generate_demo_data=false", "Global.use_visualdl=false",
                                                  "Global.save_interval=100", "Global.overwrite_output_dir=true"])
    trainer = build_trainer(cfg)
    trainer.train_step(next(iter(trainer.loader)), 1)  # the optimizer's state (moments) exists from the first step
    hook = next(h for h in trainer.hooks if isinstance(h, CheckpointHook))
    n = cfg["Global"]["max_iters"]
    runs = {"save_interval save (iteration 100)": lambda: hook.after_step(100, {}, 0),
            f"end save (iteration {n}, the quickstart's only one)": lambda: hook.after_train(n)}
    for what, fn in runs.items():
        before = set(os.listdir(out))
        io = measured(fn)
        new = sorted(f for f in os.listdir(out) if f not in before or f in ("latest", "best_model")
                     or f.startswith(("latest.", "best_model.")))
        size = sum(os.path.getsize(os.path.join(out, f)) for f in new)
        print(f"{what}: checkpoint {size} B ({', '.join(new)}); " + ", ".join(f"{k} {v} B" for k, v in io.items())
              + f"; written/checkpoint {io['wchar'] / size:.2f}, read/checkpoint {io['rchar'] / size:.2f}")
    print(f"a checkpoint save writes {io['wchar'] / size:.2f}x and reads {io['rchar'] / size:.2f}x the "
          f"{size / 1e6:.1f} MB it saves (quickstart after one step; the end's save)")

if __name__ == "__main__":
    main()
