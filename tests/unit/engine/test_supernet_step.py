"""The supernet's step: its size (Supernet.combine) and the LR of each parameter (task paths)."""
import numpy as np
import pytest

from helpers import tiny_supernet_config

SGD = "Optimizer={name: SGD, momentum: 0.0, weight_decay: 0.0, lr: {name: Constant, learning_rate: 0.5}}"


def build(demo_root, tmp_path, *extra):
    from ppufo.engine import build_trainer
    return build_trainer(tiny_supernet_config(demo_root, tmp_path, SGD, *extra))


def step_delta(trainer, batch):
    """{name: parameter after - before} of one train_step on ``batch``."""
    before = {n: p.numpy().copy() for n, p in trainer.model.named_parameters()}
    trainer.train_step(batch, 1)
    return {n: p.numpy() - before[n] for n, p in trainer.model.named_parameters()}


def test_a_sandwich_of_identical_subnets_steps_as_one_pass_and_sum_three_times(demo_root, tmp_path):
    one = build(demo_root, tmp_path / "a", "Supernet.sandwich=[largest]")
    batch = next(iter(one.loader))
    single = step_delta(one, batch)
    mean = step_delta(build(demo_root, tmp_path / "b", "Supernet.sandwich=[largest,largest,largest]"), batch)
    summed = step_delta(build(demo_root, tmp_path / "c", "Supernet.sandwich=[largest,largest,largest]",
                              "Supernet.combine=sum"), batch)
    moved = [n for n, d in single.items() if np.abs(d).max() > 0]
    assert len(moved) > 0.5 * len(single)  # the step reaches the backbone, paths and heads
    # float32 rounding: ~1e-6 of the largest step (k.bias has a zero gradient up to that noise)
    noise = 1e-6 * max(np.abs(d).max() for d in single.values())
    for n, d in single.items():
        scale = np.abs(d).max()
        assert np.abs(mean[n] - d).max() <= 1e-5 * scale + noise, n
        assert np.abs(summed[n] - 3 * d).max() <= 1e-5 * scale + 3 * noise, n


def effective_lr(trainer):
    """{parameter name: the LR multiplier Paddle applies to it} (x the scheduler's LR)."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    return {names[id(p)]: float(p.optimize_attr["learning_rate"])
            for group in trainer.optimizer._param_groups for p in group["params"]}


def test_task_lr_mult_reaches_the_task_ffn_path_and_mix_logit(demo_root, tmp_path):
    trainer = build(demo_root, tmp_path, "Tasks.face.lr_mult=2.0", "Tasks.vehicle.lr_mult=3.0",
                    "Supernet.shared_lr_mult=0.5")
    lr, tasks = effective_lr(trainer), trainer.model.task_names
    assert set(lr) == {n for n, _ in trainer.model.named_parameters()}  # every parameter, once
    mult = {"face": 2.0, "person": 1.0, "vehicle": 3.0, "product": 1.0}
    for name, got in lr.items():
        if name.startswith("heads."):
            want = mult[name.split(".")[1]]
        elif ".ffn.task." in name:
            want = mult[name.split(".ffn.task.")[1].split(".")[0]]
        elif ".ffn.mix_logit." in name:
            want = mult[tasks[int(name.split(".ffn.mix_logit.")[1])]]
        elif ".ffn.shared." in name:
            want = 0.5
        else:  # embeddings, attention, norms
            want = 1.0
        assert got == want, name
    assert {".ffn.task.", ".ffn.mix_logit.", ".ffn.shared.", ".attn."} <= {
        k for k in (".ffn.task.", ".ffn.mix_logit.", ".ffn.shared.", ".attn.") for n in lr if k in n}


def test_shared_lr_mult_zero_freezes_the_shared_path_despite_weight_decay(demo_root, tmp_path):
    from ppufo.engine import build_trainer
    trainer = build_trainer(tiny_supernet_config(demo_root, tmp_path, "Supernet.shared_lr_mult=0",
                                                 "Optimizer.lr.warmup_ratio=0.0"))
    assert trainer.cfg["Optimizer"]["weight_decay"] > 0  # AdamW's decay would move it if it were in
    delta = step_delta(trainer, next(iter(trainer.loader)))
    shared = [n for n in delta if ".ffn.shared." in n]
    assert shared and all(np.abs(delta[n]).max() == 0 for n in shared)
    assert all(np.abs(delta[n]).max() > 0 for n in delta if ".attn.qkv" in n or ".attn.q." in n)
    assert all(np.abs(delta[n]).max() > 0 for n in delta if ".ffn.task.person.fc1.weight" in n)


def test_the_clip_sees_the_combined_gradient(demo_root, tmp_path):
    """A global clip small enough to always act: a summed sandwich of three identical subnets
    is clipped once, to the single pass's step (clipping each pass would give 3x)."""
    clip = "Optimizer.clip_grad={name: global, max_norm: 1.0e-4}"
    one = build(demo_root, tmp_path / "a", "Supernet.sandwich=[largest]", clip)
    batch = next(iter(one.loader))
    single = step_delta(one, batch)
    summed = step_delta(build(demo_root, tmp_path / "c", "Supernet.sandwich=[largest,largest,largest]",
                              "Supernet.combine=sum", clip), batch)
    norm = np.sqrt(sum((d.astype("float64") ** 2).sum() for d in single.values()))
    assert norm == pytest.approx(0.5 * 1.0e-4, rel=1e-3)  # lr x max_norm: the clip acted
    noise = 1e-6 * max(np.abs(d).max() for d in single.values())
    # a step this small (~1e-7) is near the float32 spacing of the weights: each run rounds its new
    # weights to it, so two equal steps can differ by one spacing (a 3x step would differ by ~2x the step)
    ulp = {n: np.spacing(np.abs(p.numpy()).max()) for n, p in one.model.named_parameters()}
    for n, d in single.items():
        assert np.abs(summed[n] - d).max() <= 1e-4 * np.abs(d).max() + noise + ulp[n], n


def test_one_random_subnet_per_step_as_the_reference(demo_root, tmp_path):
    trainer = build(demo_root, tmp_path, "Supernet.sandwich=[random]")
    stats = trainer.train_step(next(iter(trainer.loader)), 1)
    assert float(stats["loss"]) == pytest.approx(float(stats["random0/loss"]), rel=1e-6)
    largest = trainer.space.largest()
    assert any(s != largest for s in trainer.model.subnets.values())  # it trained a drawn subnet
