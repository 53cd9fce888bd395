"""One-for-All: search space, supernet paths, gradient isolation, exact extraction."""
import json

import numpy as np
import paddle
import pytest

from ppufo.arch import build_model
from ppufo.arch.backbone import build_backbone
from ppufo.nas.extract import extract, max_feature_diff
from ppufo.arch.space import PATHS, SearchSpace, Subnet, load_subnet
from ppufo.io.weights import load_weights
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError

from helpers import ROOT, tiny_supernet_config

TASKS = ["face", "person"]
SUPER = {"name": "ViTSupernet", "embed_dim": 48, "depth": 4, "num_heads": 3, "mlp_ratio": 2.0,
         "depths": [2, 3, 4], "heads": [1, 2, 3], "ffn_ratios": [0.5, 1.0]}


def supernet(**kw):
    paddle.seed(0)
    net = build_backbone({**SUPER, **kw}, img_size=[32, 32], tasks=TASKS)
    for blk in net.blocks:  # mixing weights away from 0.5, so a wrong a or 1 - a shows
        for p in blk.ffn.mix_logit:
            p.set_value(paddle.randn([1]))
    return net


def grad_norm(params):
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def space():
    return supernet().space


def test_space_counts_and_validation():
    s = space()
    assert (s.head_dim, s.full_hidden) == (16, 96)
    assert s.size() == sum((3 * 3 * 2) ** d for d in (2, 3, 4))
    big = s.largest()
    assert big == Subnet(4, [3] * 4, ["mix"] * 4, [1.0] * 4) and s.smallest() == Subnet(2, [1, 1], ["shared"] * 2, [0.5] * 2)
    for bad, msg in [(Subnet(5, [1] * 5, ["task"] * 5, [1.0] * 5), "depth 5 not in"),
                     (Subnet(2, [1, 4], ["task"] * 2, [1.0] * 2), r"heads\[1\] = 4"),
                     (Subnet(2, [1, 1], ["task", "moe"], [1.0] * 2), r"paths\[1\] = 'moe'"),
                     (Subnet(2, [1, 1], ["task"] * 2, [1.0, 0.75]), r"ratios\[1\] = 0.75"),
                     (Subnet(3, [1, 1], ["task"] * 3, [1.0] * 3), "2 heads for depth 3")]:
        with pytest.raises(ConfigError, match=msg):
            s.validate(bad)
    with pytest.raises(ConfigError, match="heads .* must lie in 1..3"):
        SearchSpace(48, 4, 3, 16, 2.0, [4], [4], [1.0])


def test_encoding_and_json_round_trip(tmp_path):
    s, rng = space(), np.random.RandomState(0)
    seen = set()
    for _ in range(50):
        sub = s.sample(rng)
        v = s.encode(sub)
        assert v.shape == (s.encoding_length,) == (1 + 6 * 4,)
        assert s.decode(v) == sub and Subnet.from_dict(json.loads(sub.to_json())) == sub
        assert not v[1 + 6 * sub.depth:].any()  # skipped blocks encode as zeros
        seen.add(tuple(v))
    assert len(seen) == 50  # distinct subnets, distinct encodings
    path = tmp_path / "choice.json"
    path.write_text(json.dumps({"task": "person", "subnet": s.smallest().to_dict()}))
    assert load_subnet(str(path)) == s.smallest() == s.resolve(str(path))
    with pytest.raises(ConfigError, match="expected largest, smallest or a Subnet .json"):
        s.resolve("medium")
    with pytest.raises(ConfigError, match="keys depth, heads, paths, ratios"):
        Subnet.from_dict({"depth": 2})


@pytest.mark.parametrize("path", PATHS)
def test_every_path_runs_forward_and_backward_on_its_own_weights(path):
    net = supernet()
    sub = Subnet(3, [2, 1, 3], [path] * 3, [0.5, 1.0, 0.5])
    out = net(paddle.randn([2, 3, 32, 32]), "person", sub)
    assert out.shape == [2, 48]
    out.sum().backward()
    ffn = net.blocks[0].ffn
    own = {"shared": ffn.shared.parameters(), "task": ffn.task["person"].parameters(), "mix": list(ffn.mix_logit)}
    assert (grad_norm(own["shared"]) > 0) == (path in ("shared", "mix"))
    assert (grad_norm(own["task"]) > 0) == (path in ("task", "mix"))
    assert (grad_norm(own["mix"]) > 0) == (path == "mix")
    assert grad_norm(ffn.task["face"].parameters()) == 0  # another task's FFN
    # elastic slices: block 0 uses 2 of 3 heads and 48 of 96 hidden units; block 3 is skipped
    q = net.blocks[0].attn.q.weight.grad.numpy()
    assert np.abs(q[:, :32]).sum() > 0 and not q[:, 32:].any()
    fc1 = (ffn.task["person"] if path == "task" else ffn.shared).fc1.weight.grad.numpy()
    assert np.abs(fc1[:, :48]).sum() > 0 and not fc1[:, 48:].any()
    assert grad_norm(net.blocks[3].parameters()) == 0


def test_a_task_ffn_gets_no_gradient_from_other_tasks_losses(demo_root, tmp_path):
    from ppufo.engine import build_trainer
    trainer = build_trainer(tiny_supernet_config(demo_root, tmp_path))
    assert type(trainer).__name__ == "SupernetTrainer"
    batch = next(iter(trainer.loader))
    model = trainer.model
    model.set_subnets(model.space.largest())  # mix path: every task uses shared + its own FFN
    _, parts, _ = trainer.forward_losses(batch[0], batch[1], trainer.batch_sizes(batch, 1))
    parts["person"]["loss"].backward()
    for blk in model.backbone.blocks:
        assert grad_norm(blk.ffn.task["person"].parameters()) > 0 and grad_norm(blk.ffn.shared.parameters()) > 0
        for t in ("face", "vehicle", "product"):
            assert grad_norm(blk.ffn.task[t].parameters()) == 0
            assert grad_norm([blk.ffn.mix_logit[model.task_names.index(t)]]) == 0
    assert grad_norm(model.heads["face"].parameters()) == 0


def test_sandwich_step_trains_every_listed_subnet_and_is_reproducible(demo_root, tmp_path):
    from ppufo.engine import build_trainer
    cfg = tiny_supernet_config(demo_root, tmp_path, "Supernet.distill_weight=0.5")
    trainer = build_trainer(cfg)
    batch = next(iter(trainer.loader))
    seen = []
    trainer.model.set_subnets = lambda s, f=trainer.model.set_subnets: (seen.append(s), f(s))[1]
    stats = trainer.train_step(batch, 7)
    assert [set(s) for s in seen] == [set(trainer.tasks)] * 3
    sp = trainer.model.space
    assert all(s == sp.largest() for s in seen[0].values()) and all(s == sp.smallest() for s in seen[2].values())
    passes = [float(stats[f"{k}/loss"]) for k in ("largest0", "random1", "smallest2")]
    assert float(stats["loss"]) == pytest.approx(sum(passes) / 3)  # Supernet.combine: mean
    assert float(stats["random1/distill/loss"]) > 0 and "largest0/distill/loss" not in stats
    again = build_trainer(cfg)  # a fresh run draws the same random subnets at the same iteration
    seen2 = []
    again.model.set_subnets = lambda s, f=again.model.set_subnets: (seen2.append(s), f(s))[1]
    again.train_step(batch, 7)
    assert seen2[1] == seen[1] and len({s for s in seen[1].values()}) > 1  # per-task random draws
    with pytest.raises(ConfigError, match="needs 'largest' first"):
        build_trainer(tiny_supernet_config(demo_root, tmp_path, "Supernet.sandwich=[random,largest]",
                                           "Supernet.distill_weight=0.5"))


def extract_config():
    return load_config(f"{ROOT}/configs/supernet_quickstart.yaml", [
        "Global.image_shape=[3,32,32]", "Arch.Backbone.embed_dim=48", "Arch.Backbone.depth=4",
        "Arch.Backbone.depths=[2,3,4]", "Arch.Backbone.drop_path_rate=0.0"])


def test_extracted_model_equals_the_supernet_path_with_counted_parameters():
    cfg = extract_config()
    paddle.seed(3)
    model = build_model(cfg, {"face": 5, "person": 6, "vehicle": 7, "product": 8})
    for blk in model.backbone.blocks:
        for p in blk.ffn.mix_logit:
            p.set_value(paddle.randn([1]))
    model.eval()
    rng, sp = np.random.RandomState(1), model.space
    for task in model.task_names:
        for _ in range(3):
            sub = sp.sample(rng)
            plain_cfg, plain = extract(cfg, model, [task], sub)
            assert list(plain_cfg["Tasks"]) == [task] and plain_cfg["Arch"]["name"] == "MultiTaskModel"
            assert max_feature_diff(model, plain, [task], sub, [3, 32, 32]) < 1e-5
            assert sp.params(sub) == sum(int(p.size) for p in plain.backbone.parameters())
            assert sp.flops(sub) == plain.backbone.forward_flops()
    smallest = sp.smallest()
    assert sp.params(smallest) < 0.75 * sp.params(sp.uniform(4, 3, "task", 1.0))
    # several tasks share one backbone: only the shared path can serve them all
    with pytest.raises(ConfigError, match="must use the 'shared' FFN path"):
        extract(cfg, model, ["face", "person"], sp.uniform(2, 1, "task", 0.5))
    _, both = extract(cfg, model, ["face", "person"], smallest)
    assert max_feature_diff(model, both, ["face", "person"], smallest, [3, 32, 32]) < 1e-5
    with pytest.raises(ConfigError, match="Extract.task"):
        extract(cfg, model, ["cat"], smallest)


def test_supernet_initialised_from_a_plain_vit_reproduces_it():
    plain = build_backbone({"name": "VisionTransformer", "embed_dim": 48, "depth": 4, "num_heads": 3,
                            "mlp_ratio": 2.0}, img_size=[32, 32])
    plain.eval()
    net = supernet()
    load_weights(net, plain.state_dict())
    net.eval()
    x = paddle.randn([2, 3, 32, 32])
    for path in PATHS:  # every FFN path starts as a copy of the plain MLP, so mix equals it too
        np.testing.assert_allclose(net(x, "face", net.space.uniform(4, 3, path, 1.0)).numpy(), plain(x).numpy(),
                                   atol=1e-5)
    with pytest.raises(ConfigError, match=r"missing 101: blocks\.0\.attn\.k\.bias"):
        load_weights(net, {"pos_embed": plain.pos_embed})


def test_supernet_pretrained_takes_the_backbone_of_a_checkpoint_or_a_plain_vit(tmp_path):
    plain = build_backbone({"name": "VisionTransformer", "embed_dim": 48, "depth": 4, "num_heads": 3,
                            "mlp_ratio": 2.0}, img_size=[32, 32])
    plain.eval()
    state = plain.state_dict()
    files = {"checkpoint": {**{"backbone." + k: v for k, v in state.items()},
                            "heads.face.neck.bn.weight": paddle.ones([48])},
             "plain": {**state, "head.weight": paddle.ones([48, 10])}}
    x = paddle.randn([2, 3, 32, 32])
    for name, weights in files.items():
        path = str(tmp_path / f"{name}.pdparams")
        paddle.save(weights, path)
        net = supernet(pretrained=path)
        net.eval()
        np.testing.assert_allclose(net(x, "face", net.space.uniform(4, 3, "shared", 1.0)).numpy(),
                                   plain(x).numpy(), atol=1e-5)


def test_supernet_resume_trains_the_same_subnets_with_the_same_losses(demo_root, tmp_path):
    from ppufo.engine import build_trainer

    from helpers import losses_of
    cfg = lambda out, *extra: tiny_supernet_config(demo_root, out, "Global.max_iters=3", *extra)  # noqa: E731
    uninterrupted = losses_of(build_trainer(cfg(tmp_path / "full")), 3)
    first = build_trainer(cfg(tmp_path / "resumed"))
    losses_of(first, 2)
    first.save(2)
    resumed = build_trainer(cfg(tmp_path / "resumed", f"Global.checkpoints={tmp_path}/resumed/out/latest"))
    assert resumed.start_iter == 2
    np.testing.assert_allclose(losses_of(resumed, 1), uninterrupted[2:], rtol=1e-5)


def test_supernet_evaluation_recalibrates_the_bn_neck_and_puts_the_running_statistics_back(demo_root, tmp_path):
    from ppufo.engine.evaluator import Evaluator
    from ppufo.engine import build_trainer
    from ppufo.engine.calibrate import NeckCalibration
    only_person = ["Tasks.face.test_sets=[]", "Tasks.vehicle.test_sets=[]", "Tasks.product.test_sets=[]"]
    cfg = tiny_supernet_config(demo_root, tmp_path, "Supernet.calibration_images=48", *only_person)
    trainer = build_trainer(cfg)
    model, rng = trainer.model, np.random.RandomState(0)
    for t in trainer.tasks:  # running statistics that fit no subnet, as the sandwich rule leaves them
        model.heads[t].neck.bn.set_statistics(rng.randn(128), 0.5 + rng.rand(128))
    running = {t: model.heads[t].neck.bn._mean.numpy().copy() for t in trainer.tasks}
    trainer.save(1)  # iteration 1 saved, yet best_model must hold the recalibrated necks it was scored with
    score = trainer.evaluate(1)["score"]
    for t in trainer.tasks:
        np.testing.assert_array_equal(model.heads[t].neck.bn._mean.numpy(), running[t])
    from ppufo.utils.safe_load import load_state
    out = tmp_path / "out"
    assert not (out / "best_model").exists() and (out / "best_model.pdparams").is_file()  # a copy, no pointer
    key = "heads.person.neck.bn._mean"
    np.testing.assert_array_equal(load_state(str(out / "iter_1.pdparams"), "t", numpy=True)[key], running["person"])
    assert np.abs(load_state(str(out / "best_model.pdparams"), "t", numpy=True)[key] - running["person"]).max() > 1e-3
    uncalibrated = Evaluator(cfg, model).evaluate("running")["score"]
    model.set_subnets(model.space.largest())
    NeckCalibration(cfg, "person", 48)(model)
    assert Evaluator(cfg, model).evaluate("by_hand")["score"] == pytest.approx(score, abs=1e-6)
    assert abs(score - uncalibrated) > 1e-3  # the calibration did change what was scored
