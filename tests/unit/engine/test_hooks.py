"""Training hooks: each side effect of the loop on its own, then wired into a short real run."""
import json
import math
import os
import re
from types import SimpleNamespace

import paddle
import pytest

from ppufo.engine import hooks as hooks_module
from ppufo.engine.hooks import (CheckpointHook, EvalHook, Every, Hook, PeriodicWriter, TrainLogWriter, VisualDLWriter,
                                host_stats)
from ppufo.utils.checkpoint import read_states


class Recorder(Hook):
    def __init__(self, events):
        self.events = events

    def before_train(self):
        self.events.append(("before_train",))

    def after_step(self, iteration, stats, batch_images):
        self.events.append(("after_step", iteration, batch_images, sorted(stats)[:1]))

    def after_eval(self, iteration, result):
        self.events.append(("after_eval", iteration))

    def after_train(self, iteration):
        self.events.append(("after_train", iteration))


class Log(list):
    def info(self, msg):
        self.append(msg)


def fake_trainer(**kw):
    calls = []
    t = SimpleNamespace(rank=0, world_size=2, start_iter=0, tasks=["face", "person"], calls=calls,
                        best={"score": None, "iteration": None}, log=Log(), output_dir="out",
                        lr=SimpleNamespace(last_lr=0.001), model=SimpleNamespace(),
                        loader=SimpleNamespace(batch_sampler=SimpleNamespace(task_counts={"face": 4})),
                        save=lambda it: calls.append(("save", it)),
                        save_best=lambda it: calls.append(("save_best", it)),
                        barrier=lambda: calls.append(("barrier",)),
                        evaluate=lambda it: calls.append(("evaluate", it)))
    t.model.train = lambda: calls.append(("model.train",))
    t.__dict__.update(kw)
    return t


def attach(hook, trainer):
    hook.trainer = trainer
    return hook


STATS = {"loss": 1.5, "face/loss": 0.5, "person/loss": 1.0}


def run(hook, max_iters, stats=STATS):
    hook.before_train()
    for it in range(1, max_iters + 1):
        hook.after_step(it, stats, 16)
    hook.after_train(max_iters)


@pytest.mark.parametrize("interval, max_iters, saves", [
    (2, 5, [2, 4, 5]),
    (2, 4, [2, 4]),  # the end's save is the last interval's
    (0, 3, [3]),
])
def test_checkpoint_hook_saves_every_interval_and_at_the_end(interval, max_iters, saves):
    t = fake_trainer()
    run(attach(CheckpointHook(interval, max_iters), t), max_iters)
    assert t.calls == [("save", it) for it in saves]


def test_host_stats_reads_the_tensors_in_one_copy(monkeypatch):
    stats = {"loss": paddle.to_tensor(1.5), "face/loss": paddle.to_tensor([0.25]), "lr": 0.1}
    copies = []
    numpy = paddle.Tensor.numpy
    monkeypatch.setattr(paddle.Tensor, "numpy", lambda self: (copies.append(self.shape), numpy(self))[1])
    assert host_stats(stats) == {"loss": 1.5, "face/loss": 0.25, "lr": 0.1} and copies == [[2]]
    assert host_stats({"loss": 2.0}) == {"loss": 2.0}


def test_eval_hook_evaluates_every_interval_and_keeps_the_best():
    t = fake_trainer()
    hook = attach(EvalHook(2, 5), t)
    run(hook, 5)
    assert t.calls == [("evaluate", 2), ("model.train",), ("evaluate", 4), ("model.train",)]
    t.calls.clear()
    for it, score in [(2, 0.5), (4, 0.4), (5, None), (6, 0.6), (7, 0.6)]:
        hook.after_eval(it, {"score": score})
    assert t.best == {"score": 0.6, "iteration": 6}
    assert t.calls == [("save_best", 2), ("barrier",), ("barrier",), ("barrier",), ("save_best", 6), ("barrier",),
                       ("barrier",)]
    assert t.log == ["new best score 0.5000 at iteration 2: saved out/best_model",
                     "score 0.4000 at iteration 4; best_model keeps 0.5000 (iteration 2)",
                     "new best score 0.6000 at iteration 6: saved out/best_model",
                     "score 0.6000 at iteration 7; best_model keeps 0.6000 (iteration 6)"]
    other = fake_trainer(rank=1)  # only rank 0 keeps (and saves) the best; every rank waits for it
    attach(EvalHook(0, 5), other).after_eval(2, {"score": 0.9})
    assert other.best["score"] is None and other.calls == [("barrier",)]


def test_every_is_the_one_rule_of_log_checkpoint_and_eval_steps():
    log, ckpt, ev = Every(3, 20), Every(5, 20), Every(7, 20)
    steps = range(1, 21)
    assert [i for i in steps if log.due(i)] == [3, 6, 9, 12, 15, 18, 20]
    assert [i for i in steps if ckpt.due(i)] == [5, 10, 15, 20]
    assert [i for i in steps if ev.due(i)] == [7, 14, 20]
    # checkpoints and evaluations at the last step are the end's own: the hooks act before it
    assert [i for i in steps if ckpt.before_end(i)] == [5, 10, 15]
    assert [i for i in steps if Every(0, 20).due(i)] == [20]  # interval 0: only the end
    t = fake_trainer()
    run(attach(CheckpointHook(5, 20), t), 20)
    run(attach(EvalHook(7, 20), t), 20)
    assert t.calls == [("save", 5), ("save", 10), ("save", 15), ("save", 20),
                       ("evaluate", 7), ("model.train",), ("evaluate", 14), ("model.train",)]


class Recording:
    """Records every write(iteration, values, ips) a writer receives, then passes it on."""

    def __init__(self, writer, seen):
        self.writer, self.seen = writer, seen

    def __getattr__(self, name):
        return getattr(self.writer, name)

    def write(self, iteration, values, ips):
        self.seen.append((type(self.writer).__name__, iteration, values, ips))
        self.writer.write(iteration, values, ips)


def periodic(trainer, every, writers):
    return attach(PeriodicWriter(every, writers), trainer)


def test_log_writer_lines():
    t = fake_trainer()
    run(periodic(t, Every(2, 5), [TrainLogWriter(5)]), 5)
    assert t.log[0] == ("training ['face', 'person'] from iteration 0 to 5 on 2 process(es), "
                        "per-step images per rank: {'face': 4}")
    steps = [m for m in t.log if m.startswith("[Train]")]
    assert [m.split("]")[1] for m in steps] == ["[Iter: 2/5", "[Iter: 4/5", "[Iter: 5/5"]
    line = r"\[Train\]\[Iter: 2/5\] lr: 0\.00100, loss: 1\.5000 \(face: 0\.5000, person: 1\.0000\), " \
           r"ips: [\d.]+ images/s, eta: 0:00:00"
    assert re.fullmatch(line, steps[0]), steps[0]
    assert t.log[-1] == "training done: 5 iterations, 160 images in 0:00:00; checkpoint out/latest"


def test_the_writer_refuses_stats_left_on_the_device_at_a_log_step():
    """Tensors between log steps are fine (nothing reads them); at a log step they mean the
    trainer did not make its one host copy, and a writer reading them would wait for the device."""
    t = fake_trainer()
    hook = periodic(t, Every(2, 5), [TrainLogWriter(5)])
    hook.before_train()
    tensors = {k: paddle.to_tensor(v) for k, v in STATS.items()}
    hook.after_step(1, tensors, 16)
    with pytest.raises(RuntimeError, match=r"iteration 2: stats \['loss', 'face/loss', 'person/loss'\] are "
                                           r"still on the device at a log step"):
        hook.after_step(2, tensors, 16)


def test_visualdl_writer_scalars():
    scalars = []
    vdl = SimpleNamespace(add_scalar=lambda tag, v, it: scalars.append((tag, it)))
    hook = periodic(fake_trainer(vdl=vdl), Every(2, 3), [VisualDLWriter()])
    run(hook, 3)
    hook.after_eval(3, {"score": 0.5})
    hook.after_eval(4, {"score": None})
    tags = ["train/lr", "train/ips", "train/loss", "train/face/loss", "train/person/loss"]
    assert scalars == [(k, 2) for k in tags] + [(k, 3) for k in tags] + [("eval/score", 3)]


def test_one_host_copy_per_log_step_shared_by_the_log_and_visualdl(make_config, monkeypatch):
    """Log every 3 steps of 7: the stats are read to the host once at steps 3, 6 and 7 and at no
    other step, and the training log and VisualDL get that same dict and the same images/s."""
    from ppufo.engine import trainer as trainer_module
    from ppufo.engine.trainer import Trainer
    copies = []

    def counted(stats):
        copies.append(1)
        return host_stats(stats)
    monkeypatch.setattr(trainer_module, "host_stats", counted)
    monkeypatch.setattr(hooks_module, "host_stats", counted)
    trainer = Trainer(make_config("Global.max_iters=7", "Global.log_interval=3", "Global.eval_interval=0",
                                  "Global.use_visualdl=true"))
    scalars = {}
    trainer.vdl.close()
    trainer.vdl = SimpleNamespace(add_scalar=lambda tag, v, it: scalars.setdefault(it, {}).update({tag: v}),
                                  close=lambda: None)
    writer = trainer.hooks[0]
    assert [type(w).__name__ for w in writer.writers] == ["TrainLogWriter", "VisualDLWriter"]
    assert writer.every is trainer.log_every  # the trainer's copy steps are the writer's steps
    seen = []
    writer.writers = [Recording(w, seen) for w in writer.writers]
    per_step = {}
    trainer.register_hooks([type("Count", (Hook,), {"after_step": lambda self, it, stats, n: per_step.update(
        {it: len(copies) - sum(per_step.values())})})()])
    trainer.train()
    assert per_step == {1: 0, 2: 0, 3: 1, 4: 0, 5: 0, 6: 1, 7: 1}
    assert [(name, it) for name, it, _, _ in seen] == [("TrainLogWriter", 3), ("VisualDLWriter", 3),
                                                       ("TrainLogWriter", 6), ("VisualDLWriter", 6),
                                                       ("TrainLogWriter", 7), ("VisualDLWriter", 7)]
    for log, vdl in zip(seen[::2], seen[1::2]):
        assert log[2] is vdl[2] and log[3] == vdl[3]  # the same host values, the same images/s
        assert all(isinstance(v, float) for v in log[2].values())
        assert {f"train/{k}": v for k, v in log[2].items()}.items() <= scalars[log[1]].items()
        assert scalars[log[1]]["train/ips"] == log[3]
    with open(os.path.join(trainer.output_dir, "train.log")) as f:
        lines = [m for m in f.read().splitlines() if "[Train][Iter:" in m]
    assert [f"loss: {values['loss']:.4f} (" in line and f"ips: {ips:.1f} images/s" in line
            for line, (_, _, values, ips) in zip(lines, seen[::2])] == [True] * 3


def test_trainer_runs_its_hooks_around_every_step(make_config, tmp_path):
    from ppufo.engine.trainer import Trainer
    no_eval = ["Tasks.face.test_sets=[]", "Tasks.vehicle.test_sets=[]", "Tasks.product.test_sets=[]",
               "Tasks.person.test_sets=[{name: Market1501, root: market1501}]"]
    out = tmp_path / "run"
    trainer = Trainer(make_config("Global.max_iters=3", "Global.save_interval=2", "Global.eval_interval=2",
                                  *no_eval, output_dir=out))
    assert [type(h).__name__ for h in trainer.hooks] == ["PeriodicWriter", "CheckpointHook", "EvalHook"]
    events = []
    trainer.register_hooks([Recorder(events)])
    assert trainer.train() == 3
    # registered last, it hears of step 2's evaluation (EvalHook's) before step 2 itself
    assert events == [("before_train",), ("after_step", 1, 32, ["face/CELoss"]), ("after_eval", 2),
                      ("after_step", 2, 32, ["face/CELoss"]), ("after_step", 3, 32, ["face/CELoss"]),
                      ("after_train", 3)]
    assert {p.name for p in out.iterdir()} >= {"iter_2.pdparams", "iter_3.pdparams", "latest", "best_model",
                                               "eval_iter_2.json"}
    assert not [p.name for p in out.iterdir() if p.name.startswith(("latest.", "best_model."))]  # no full copies
    # iteration 2 was saved, then evaluated: best_model names iter_2, with the score of that evaluation
    assert json.loads((out / "best_model").read_text()) == {"checkpoint": "iter_2", "iteration": 2, "best": trainer.best}
    best = read_states(str(out / "best_model"))["best"]
    assert best["iteration"] == 2 and best == trainer.best == read_states(str(out / "latest"))["best"]
    assert read_states(str(out / "latest"))["iteration"] == 3
    log = (out / "train.log").read_text()
    assert "on 1 process(es)" in log and "[Train][Iter: 3/3]" in log and "new best score" in log
    # the summary follows the final checkpoint: after_train unwinds in reverse order
    assert log.rstrip().endswith(f"checkpoint {out}/latest")


def test_non_finite_loss_stops_before_the_hooks_see_the_step(make_config):
    from ppufo.engine.trainer import Trainer
    trainer = Trainer(make_config())
    events = []
    trainer.register_hooks([Recorder(events)])
    trainer.train_step = lambda batch, it: {"loss": math.nan if it == 2 else 1.0}
    with pytest.raises(FloatingPointError, match=r"iteration 2: loss is nan \({'loss': nan}\)"):
        trainer.train()
    assert [e[:2] for e in events] == [("before_train",), ("after_step", 1)]


def test_a_new_run_refuses_a_folder_with_another_runs_checkpoints_and_keeps_the_better_best_model(
        make_config, tmp_path):
    """The README's second command once replaced the quickstart's 200-iteration best_model (0.80) by
    a 6-iteration one (0.38) under a "new best score" line."""
    from ppufo.engine.trainer import Trainer
    from ppufo.utils.errors import ConfigError
    out = tmp_path / "run"
    first = Trainer(make_config("Global.max_iters=1", output_dir=out))
    first.train()
    first.best = {"score": 0.8, "iteration": 200}  # as if evaluated: best_model with its score
    first.save_best(200)  # not a saved iteration: a full copy
    saved = (out / "best_model.pdparams").read_bytes(), (out / "iter_1.pdparams").read_bytes()
    with pytest.raises(ConfigError, match=r"Global.output_dir=.*run already holds the checkpoints of another "
                                          r"run \(best_model, iter_1, latest, latest at iteration 1\).*"
                                          r"Global.checkpoints=.*latest.*Global.overwrite_output_dir=true"):
        Trainer(make_config("Global.max_iters=1", output_dir=out))
    assert ((out / "best_model.pdparams").read_bytes(), (out / "iter_1.pdparams").read_bytes()) == saved
    again = Trainer(make_config("Global.max_iters=1", "Global.overwrite_output_dir=true", output_dir=out))
    assert again.best == {"score": 0.8, "iteration": 200}  # the best already on disk, not None
    hook = next(h for h in again.hooks if type(h).__name__ == "EvalHook")
    hook.after_eval(6, {"score": 0.38})
    assert (out / "best_model.pdparams").read_bytes() == saved[0] and again.best["score"] == 0.8
    hook.after_eval(7, {"score": 0.9})
    assert (out / "best_model.pdparams").read_bytes() != saved[0]
    assert read_states(str(out / "best_model"))["best"] == {"score": 0.9, "iteration": 7}
    # resuming is not a new run: no refusal
    Trainer(make_config("Global.max_iters=2", f"Global.checkpoints={out / 'latest'}", output_dir=out))
