import math

import numpy as np
import paddle
import pytest

from ppufo.optimizer import LR_SCHEDULERS, OPTIMIZERS, build_lr, build_optimizer
from ppufo.utils.errors import ConfigError


# ---------------------------------------------------------------- LR schedules
def cosine_ref(it, base=0.2, eta_min=0.004, warmup=10, max_iters=100, start=0.0):
    if it < warmup:
        return start + (base - start) * it / warmup
    t = min(it - warmup, max_iters - warmup) / (max_iters - warmup)
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t)) / 2


def values(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.get_lr())
        sched.step()
    return out


def test_warmup_cosine_closed_form():
    s = build_lr({"name": "WarmupCosine", "learning_rate": 0.2, "warmup_ratio": 0.1, "eta_min": 0.004}, 100)
    assert s.warmup == 10 and s.last_epoch == 0
    got = values(s, 120)
    assert got[0] == 0.0
    assert got[5] == pytest.approx(0.1)
    assert got[10] == pytest.approx(0.2)  # end of warmup = peak
    assert got[55] == pytest.approx(0.004 + 0.196 / 2)  # half way through the cosine
    assert got[100] == pytest.approx(0.004) and got[119] == pytest.approx(0.004)
    np.testing.assert_allclose(got, [cosine_ref(i) for i in range(120)], rtol=1e-12)
    assert all(a <= b for a, b in zip(got[:11], got[1:11]))  # rises during warmup
    assert all(a >= b for a, b in zip(got[10:100], got[11:101]))  # then decays


def test_warmup_iters_and_start_lr():
    s = build_lr({"name": "WarmupCosine", "learning_rate": 1.0, "warmup_iters": 4, "warmup_start_lr": 0.2}, 20)
    got = values(s, 21)
    np.testing.assert_allclose(got[:5], [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(got, [cosine_ref(i, 1.0, 0.0, 4, 20, 0.2) for i in range(21)], rtol=1e-12)
    # the paper's setting: 0.2 -> 0.004, 10% of 60k warmup
    s = build_lr({"name": "WarmupCosine", "learning_rate": 0.2, "warmup_ratio": 0.1, "eta_min": 0.004}, 60000)
    assert s.warmup == 6000
    s.last_epoch = 33000
    assert s.get_lr() == pytest.approx(0.102)


def test_constant_and_piecewise():
    assert values(build_lr(0.05, 10), 3) == [0.05, 0.05, 0.05]
    c = build_lr({"name": "Constant", "learning_rate": 0.3, "warmup_iters": 3}, 10)
    np.testing.assert_allclose(values(c, 5), [0.0, 0.1, 0.2, 0.3, 0.3])
    p = build_lr({"name": "WarmupPiecewise", "learning_rate": 1.0, "milestones": [5, 8], "gamma": 0.5,
                  "warmup_iters": 2, "warmup_start_lr": 0.5}, 10)
    np.testing.assert_allclose(values(p, 10), [0.5, 0.75, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])


def test_scheduler_state_dict_round_trip():
    cfg = {"name": "WarmupCosine", "learning_rate": 0.2, "warmup_ratio": 0.1, "eta_min": 0.004}
    a = build_lr(cfg, 100)
    values(a, 37)
    state = a.state_dict()
    assert state["last_epoch"] == 37
    b = build_lr(cfg, 100)
    b.set_state_dict(state)
    assert b.last_epoch == 37 and b.last_lr == pytest.approx(cosine_ref(37))
    assert values(b, 5) == values(a, 5)


@pytest.mark.parametrize("cfg, message", [
    ({"name": "Cosine", "learning_rate": 0.1}, r"Optimizer\.lr\.name: unknown lr schedule 'Cosine'; known: Constant, WarmupCosine, WarmupPiecewise"),
    ({"name": "WarmupCosine", "learning_rate": 0.1, "warmup_epoch": 1}, r"Optimizer\.lr \(WarmupCosine\): unknown key\(s\) \['warmup_epoch'\]; accepted: \['learning_rate', 'max_iters'"),
    ({"name": "WarmupCosine", "learning_rate": 0.1, "warmup_iters": 5, "warmup_ratio": 0.1}, r"Optimizer\.lr\.warmup_iters/warmup_ratio: give one of them"),
    ({"name": "WarmupCosine", "learning_rate": 0.1, "warmup_ratio": 1.5}, r"Optimizer\.lr\.warmup_ratio: 1\.5 is out of range; allowed: \[0, 1\)"),
    ({"name": "WarmupCosine", "learning_rate": 0.1, "warmup_iters": 500}, r"Optimizer\.lr\.warmup_iters: 500 is more than max_iters 100"),
    ({"name": "WarmupCosine", "learning_rate": "fast"}, r"Optimizer\.lr\.learning_rate: expected float, got str 'fast'"),
    ({"name": "WarmupPiecewise", "learning_rate": 0.1, "milestones": [50, 20]}, r"Optimizer\.lr\.milestones: expected an increasing list"),
    ({"learning_rate": 0.1}, r"Optimizer\.lr: expected a mapping with a 'name' key"),
])
def test_lr_errors(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_lr(cfg, 100)


# ---------------------------------------------------------------- optimizers
class Tiny(paddle.nn.Layer):
    """Two linear layers used as two 'tasks' (shared + head)."""

    def __init__(self):
        super().__init__()
        self.shared = paddle.nn.Linear(3, 2)
        self.head = paddle.nn.Linear(3, 2)

    def forward(self, x):
        return self.shared(x), self.head(x)


def tiny(seed=0):
    paddle.seed(seed)
    return Tiny()


def loss_fn(model, x, y):
    a, b = model(x)
    return ((a - y) ** 2).mean() + 0.5 * ((b + y) ** 2).mean()


def data():
    rs = np.random.RandomState(0)
    return paddle.to_tensor(rs.randn(8, 3).astype("float32")), paddle.to_tensor(rs.randn(8, 2).astype("float32"))


def groups(model, mult=2.5):
    return [{"params": model.shared.parameters(), "lr_mult": 1.0},
            {"params": model.head.parameters(), "lr_mult": mult}]


def numpy_params(model):
    return {n: p.numpy().astype(np.float64) for n, p in model.named_parameters()}


@pytest.mark.parametrize("momentum, nesterov", [(0.9, False), (0.0, False), (0.9, True)])
def test_sgd_groups_match_hand_computed_update(momentum, nesterov):
    model = tiny()
    cfg = {"name": "SGD", "momentum": momentum, "nesterov": nesterov, "weight_decay": 0.01,
           "no_weight_decay": ["bias"], "clip_grad": None,
           "lr": {"name": "WarmupCosine", "learning_rate": 0.1, "warmup_iters": 2, "eta_min": 0.01}}
    opt, sched = build_optimizer(cfg, groups(model), max_iters=6, model=model)
    x, y = data()
    w = numpy_params(model)
    vel = {n: np.zeros_like(v) for n, v in w.items()}
    lrs = []
    for it in range(5):
        loss_fn(model, x, y).backward()
        grads = {n: p.grad.numpy().astype(np.float64) for n, p in model.named_parameters()}
        base = sched.get_lr()
        lrs.append(base)
        opt.step()
        opt.clear_grad()
        sched.step()
        for n in w:  # coupled L2, momentum, per-group multiplier
            mult = 2.5 if n.startswith("head") else 1.0
            wd = 0.0 if n.endswith("bias") else 0.01
            g = grads[n] + wd * w[n]
            vel[n] = momentum * vel[n] + g
            step = g + momentum * vel[n] if nesterov else vel[n]
            w[n] = w[n] - base * mult * step
        for n, p in model.named_parameters():
            np.testing.assert_allclose(p.numpy(), w[n], rtol=1e-5, atol=1e-6, err_msg=f"{n} at step {it}")
    np.testing.assert_allclose(lrs, [cosine_ref(i, 0.1, 0.01, 2, 6) for i in range(5)])
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["SGD", "Momentum"])
def test_momentum_0_is_plain_sgd_without_a_buffer_per_parameter(name):
    cfg = {"name": name, "weight_decay": 1e-4, "lr": {"name": "Constant", "learning_rate": 0.1}}
    x, y = data()
    for momentum, kind, buffers in [(0.0, paddle.optimizer.SGD, 0), (0.9, paddle.optimizer.Momentum, 4)]:
        model = tiny()
        opt, _ = build_optimizer(dict(cfg, momentum=momentum), groups(model), 10)
        loss_fn(model, x, y).backward()
        opt.step()
        assert isinstance(opt, kind) and (momentum > 0) == isinstance(opt, paddle.optimizer.Momentum)
        assert sum("velocity" in k for k in opt.state_dict()) == buffers == 4 * (momentum > 0)


def test_plain_sgd_single_step_exact():
    model = tiny()
    cfg = {"name": "SGD", "momentum": 0.0, "weight_decay": 1e-4, "lr": {"name": "Constant", "learning_rate": 0.2}}
    opt, _ = build_optimizer(cfg, groups(model, mult=2.0), max_iters=10)
    x, y = data()
    w0 = numpy_params(model)
    loss_fn(model, x, y).backward()
    g = {n: p.grad.numpy().astype(np.float64) for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():  # no exclusions: every tensor decays, as the reference
        expect = w0[n] - 0.2 * (2.0 if n.startswith("head") else 1.0) * (g[n] + 1e-4 * w0[n])
        np.testing.assert_allclose(p.numpy(), expect, rtol=1e-6, atol=1e-7)


def _one_step_updates(clip, mult=1.0):
    model = tiny()
    cfg = {"name": "SGD", "momentum": 0.0, "weight_decay": 0.0, "clip_grad": clip,
           "lr": {"name": "Constant", "learning_rate": 1.0}}
    opt, _ = build_optimizer(cfg, groups(model, mult), max_iters=10, model=model)
    x, y = data()
    w0 = numpy_params(model)
    (100 * loss_fn(model, x, y)).backward()  # large gradients so that clipping bites
    g = {n: p.grad.numpy().astype(np.float64) for n, p in model.named_parameters()}
    opt.step()
    upd = {n: w0[n] - p.numpy() for n, p in model.named_parameters()}
    return g, upd, opt


def test_per_tensor_clip_limits_each_update():
    g, upd, _ = _one_step_updates({"name": "per_tensor", "max_norm": 0.5})
    for n in g:
        gn = np.linalg.norm(g[n])
        assert gn > 0.5
        assert np.linalg.norm(upd[n]) == pytest.approx(0.5, rel=1e-4)  # each tensor clipped to 0.5
        np.testing.assert_allclose(upd[n], g[n] * 0.5 / gn, rtol=1e-4, atol=1e-6)


def test_global_clip_spans_all_groups():
    g, upd, opt = _one_step_updates({"name": "global", "max_norm": 1.0})
    total = math.sqrt(sum(np.sum(v ** 2) for v in g.values()))
    assert isinstance(opt.last_grad_norm, paddle.Tensor)  # left on the device: no sync in the step
    assert total > 1.0 and float(opt.last_grad_norm) == pytest.approx(total, rel=1e-5)
    # one scale for all tensors of both groups (Paddle alone would clip each group separately)
    joint = math.sqrt(sum(np.sum(v ** 2) for v in upd.values()))
    assert joint == pytest.approx(1.0, rel=1e-4)
    for n in g:
        np.testing.assert_allclose(upd[n], g[n] / total, rtol=1e-4, atol=1e-6)
    # under the limit nothing changes
    g, upd, _ = _one_step_updates({"name": "global", "max_norm": 1e6})
    for n in g:
        np.testing.assert_allclose(upd[n], g[n], rtol=1e-5, atol=1e-6)


def test_adamw_decoupled_decay_and_lr_mult():
    model = tiny()
    cfg = {"name": "AdamW", "weight_decay": 0.1, "no_weight_decay": ["bias"], "epsilon": 1e-8,
           "lr": {"name": "Constant", "learning_rate": 0.01}}
    opt, _ = build_optimizer(cfg, groups(model, mult=3.0), max_iters=10, model=model)
    x, y = data()
    w0 = numpy_params(model)
    loss_fn(model, x, y).backward()
    g = {n: p.grad.numpy().astype(np.float64) for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():  # first Adam step = lr * sign(g); decay lr * wd * w
        lr = 0.01 * (3.0 if n.startswith("head") else 1.0)
        wd = 0.0 if n.endswith("bias") else 0.1
        expect = w0[n] * (1 - lr * wd) - lr * g[n] / (np.abs(g[n]) + 1e-8)
        np.testing.assert_allclose(p.numpy(), expect, rtol=1e-4, atol=1e-6, err_msg=n)


def test_param_attr_lr_multiplies_and_rebuild_does_not_compound():
    paddle.seed(0)
    lin = paddle.nn.Linear(2, 2, weight_attr=paddle.ParamAttr(learning_rate=0.5))
    cfg = {"name": "SGD", "lr": {"name": "Constant", "learning_rate": 0.1}}
    for _ in range(2):
        opt, _ = build_optimizer(cfg, [{"params": lin.parameters(), "lr_mult": 4.0}], 10)
        mults = {p.name: g["learning_rate"] for g in opt._param_groups for p in g["params"]}
        assert mults == {lin.weight.name: 2.0, lin.bias.name: 4.0}


def test_optimizer_state_round_trip_resumes_identically():
    cfg = {"name": "SGD", "momentum": 0.9, "weight_decay": 1e-3,
           "lr": {"name": "WarmupCosine", "learning_rate": 0.05, "warmup_iters": 2}}
    x, y = data()

    def train(model, opt, sched, n):
        for _ in range(n):
            loss_fn(model, x, y).backward()
            opt.step()
            opt.clear_grad()
            sched.step()

    guard = paddle.utils.unique_name.guard  # fresh names: parameters and their accumulators
    with guard():
        a = tiny()
        opt_a, sched_a = build_optimizer(cfg, groups(a), 8)
        train(a, opt_a, sched_a, 3)
        model_state = {k: v.numpy().copy() for k, v in a.state_dict().items()}
        opt_state = {k: (v.numpy().copy() if isinstance(v, paddle.Tensor) else v)
                     for k, v in opt_a.state_dict().items()}
        assert any(k.endswith("_velocity_0") for k in opt_state)
        train(a, opt_a, sched_a, 2)
    with guard():  # as a new process would
        b = tiny(seed=5)
        opt_b, sched_b = build_optimizer(cfg, groups(b), 8)
        b.set_state_dict({k: paddle.to_tensor(v) for k, v in model_state.items()})
        opt_b.set_state_dict(opt_state)
        assert sched_b.last_epoch == 3  # the scheduler position travels with the optimizer state
        train(b, opt_b, sched_b, 2)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(q.numpy(), p.numpy(), rtol=1e-6, err_msg=n)
    # without the velocity the continuation differs (so the test can fail)
    with guard():
        c = tiny(seed=5)
        opt_c, sched_c = build_optimizer(cfg, groups(c), 8)
        c.set_state_dict({k: paddle.to_tensor(v) for k, v in model_state.items()})
        sched_c.set_state_dict(opt_state["LR_Scheduler"])
        train(c, opt_c, sched_c, 2)
    assert not np.allclose(c.shared.weight.numpy(), a.shared.weight.numpy(), rtol=1e-6)


@pytest.mark.parametrize("cfg, message", [
    ({"name": "SGD", "betas": [0.9, 0.99]}, r"Optimizer: unknown key\(s\) \['betas'\] for SGD; accepted: \['name', 'lr', 'weight_decay', 'no_weight_decay', 'clip_grad', 'momentum', 'nesterov'\]"),
    ({"name": "AdamW", "momentum": 0.9}, r"unknown key\(s\) \['momentum'\] for AdamW; accepted: .*'beta1', 'beta2', 'epsilon'"),
    ({"name": "Lamb"}, r"Optimizer\.name: unknown optimizer 'Lamb'; known: AdamW, Momentum, SGD"),
    ({"name": "SGD", "lr": None}, r"Optimizer\.lr: missing"),
    ({"name": "SGD", "momentum": 1.5}, r"Optimizer\.momentum: 1\.5 is out of range; allowed: \[0, 1\]"),
    ({"name": "SGD", "clip_grad": {"name": "value", "max_norm": 1}}, r"Optimizer\.clip_grad\.name: expected one of \['per_tensor', 'global'\]"),
    ({"name": "SGD", "clip_grad": {"max_norm": 1, "norm_type": 2}}, r"Optimizer\.clip_grad: unknown key\(s\) \['norm_type'\]"),
    ({"name": "SGD", "clip_grad": {"max_norm": 0}}, r"Optimizer\.clip_grad\.max_norm: 0\.0 is out of range; allowed: > 0"),
    ({"name": "SGD", "no_weight_decay": [3]}, r"Optimizer\.no_weight_decay: expected a list of parameter-name substrings"),
    ({"name": "SGD", "weight_decay": -1}, r"Optimizer\.weight_decay: -1\.0 is out of range; allowed: >= 0"),
    ({"name": "SGD", "lr": {"name": "WarmupCosine"}}, r"Optimizer\.lr \(WarmupCosine\): missing required key\(s\) \['learning_rate'\]"),
])
def test_optimizer_config_errors(cfg, message):
    cfg = dict({"lr": {"name": "Constant", "learning_rate": 0.1}}, **cfg)
    with pytest.raises(ConfigError, match=message):
        build_optimizer(cfg, groups(tiny()), 10)


def test_param_group_errors():
    model = tiny()
    cfg = {"name": "SGD", "lr": 0.1}
    with pytest.raises(ValueError, match=r"is in param_groups\[0\] and param_groups\[1\]"):
        build_optimizer(cfg, [{"params": model.shared.parameters()}, {"params": [model.shared.weight]}], 10)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: unknown key\(s\) \['lr'\]"):
        build_optimizer(cfg, [{"params": model.shared.parameters(), "lr": 2}], 10)
    with pytest.raises(ValueError, match="no parameters to optimise"):
        build_optimizer(cfg, [{"params": []}], 10)
    opt, _ = build_optimizer(cfg, model.parameters(), 10)  # a flat list is one group
    assert len(opt._param_groups) == 1


def test_registries():
    assert {"SGD", "Momentum", "AdamW"} <= set(OPTIMIZERS.names())
    assert {"WarmupCosine", "Constant", "WarmupPiecewise"} <= set(LR_SCHEDULERS.names())
