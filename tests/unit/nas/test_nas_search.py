"""GP-NAS predictor, latency tables, measurement cache/resume, budgeted search and its tool chain."""
import json

import numpy as np
import pytest

from ppufo.nas.cache import MeasureCache, subnet_key
from ppufo.nas.latency_table import load_table, required_entries, write_table
from ppufo.nas.predictor import GPNASPredictor, _gpnas_class, kendall_tau, quality, subnet_features
from ppufo.nas.search import BudgetedSearch, Measure, sample_subnets
from ppufo.arch.space import SearchSpace, Subnet
from ppufo.utils.errors import ConfigError

from helpers import ROOT


def space():
    # the quickstart supernet's space: embed 192, 6 blocks of up to 3 heads of 64, hidden 768
    return SearchSpace(192, 6, 3, 64, 4.0, [2, 3, 4, 5, 6], [1, 2, 3], [0.25, 0.5, 0.75, 1.0], img_size=(64, 64))


def smooth(v):
    """A smooth nonlinear function of the encoding that depends on block positions."""
    w = np.linspace(1.0, 0.3, len(v))
    return np.tanh(1.5 * (v @ w) / len(v) * 4 - 2) + 0.2 * np.sin(3 * v[1::6].sum())


def smooth_summary(v):
    """The same, of the block totals only (what the "summary" features keep)."""
    t = v[1:].reshape(-1, 6).sum(0)
    return np.tanh(0.3 * t[1] + 0.2 * t[2] + 0.1 * t[5] - 1.5) + 0.2 * np.sin(t[0])


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # GPNAS uses np.matrix
def test_vectorised_kernels_equal_paddleslims_loops():
    from paddleslim.nas import GPNAS
    rng = np.random.RandomState(0)
    a, b = rng.rand(6, 5), rng.rand(4, 5)
    for c_flag in (1, 2):
        ours, theirs = _gpnas_class()(c_flag, 2), GPNAS(c_flag, 2)
        np.testing.assert_allclose(ours._get_cor_mat_joint(a, b), theirs._get_cor_mat_joint(a, b), atol=1e-12)
        np.testing.assert_allclose(ours._get_cor_mat(a), theirs._get_cor_mat(a), atol=1e-12)


@pytest.mark.parametrize("kind, fn", [("encoding", smooth), ("summary", smooth_summary)])
def test_predictor_recovers_a_smooth_function_of_the_encoding_from_30_fits(kind, fn):
    sp, rng = space(), np.random.RandomState(0)
    subnets = sample_subnets(sp, 30 + 60, rng)
    y = np.array([fn(sp.encode(s)) for s in subnets])
    X = subnet_features(sp, subnets, kind)
    pred = GPNASPredictor().fit(X[:30], y[:30])
    q = quality(pred.predict(X[30:]), y[30:])
    assert q["n"] == 60 and q["tau"] >= 0.8, q
    assert q["rmse"] < 0.5 * y[30:].std()  # far better than predicting the mean
    assert kendall_tau(pred.predict(X[:30]), y[:30]) > 0.9  # and it fits what it saw


def test_relevance_weights_find_the_few_columns_that_matter():
    """3 of 14 columns drive the target: an isotropic kernel sees mostly the 11 others."""
    def f(X):
        return np.exp(2 * X[:, 0]) + 3 * np.sqrt(X[:, 1]) + X[:, 2] ** 2
    gains = []
    for seed in range(3):
        rng = np.random.RandomState(seed)
        X, Xt = rng.rand(30, 14), rng.rand(300, 14)
        y = f(X) + 0.1 * rng.randn(30)
        plain = kendall_tau(GPNASPredictor(weighting="none").fit(X, y).predict(Xt), f(Xt))
        auto = GPNASPredictor().fit(X, y)  # cross-validation chooses the weighting
        assert auto.weighting == "ridge"
        assert min(auto.weights[:2]) > max(auto.weights[3:])
        tau = kendall_tau(auto.predict(Xt), f(Xt))
        assert tau > 0.78
        gains.append(tau - plain)
    assert np.mean(gains) > 0.15, gains
    with pytest.raises(ConfigError, match="weighting 'ard'"):
        GPNASPredictor(weighting="ard")


def test_predictor_normalises_scale_and_rejects_bad_input():
    sp, rng = space(), np.random.RandomState(1)
    subnets = sample_subnets(sp, 40, rng)
    X = subnet_features(sp, subnets, "summary")
    y = np.array([smooth(sp.encode(s)) for s in subnets])
    a = GPNASPredictor(hp=(1e-3, 0.01)).fit(X[:30], y[:30]).predict(X[30:])
    b = GPNASPredictor(hp=(1e-3, 0.01)).fit(X[:30], 1000 * y[:30] + 5).predict(X[30:])
    np.testing.assert_allclose(b, 1000 * a + 5, rtol=1e-6)  # ms or mAP: same ranking, same fit
    with pytest.raises(ValueError, match="at least 4"):
        GPNASPredictor().fit(X[:3], y[:3])
    with pytest.raises(ValueError, match="every training encoding is the same"):
        GPNASPredictor().fit(np.ones((5, 3)), np.arange(5.0))
    with pytest.raises(ValueError, match="nan"):
        GPNASPredictor().fit(X[:5], [1, 2, np.nan, 4, 5])
    with pytest.raises(ConfigError, match="features='bogus'"):
        subnet_features(sp, subnets, "bogus")


# -- latency tables ----------------------------------------------------------------------------
def table(sp, **over):
    need = required_entries(sp)
    entry = {"geometry": {"embed_dim": 192, "head_dim": 64, "patch_size": 16, "image_shape": [3, 64, 64],
                          "batch_size": 1},
             "provenance": {"measured": False, "how": "test values"}, "stem": 0.5,
             "attention": {str(h): 0.1 * h for h in need["attention"]},
             "ffn": {str(m): m / 1000 for m in need["ffn"]}}
    entry.update(over)
    return entry


def test_latency_from_a_table_is_the_sum_of_its_entries(tmp_path):
    sp = space()
    assert required_entries(sp) == {"attention": [1, 2, 3], "ffn": [192, 384, 576, 768, 1152, 1536]}
    path = write_table("gpu", table(sp), str(tmp_path / "gpu.json"))
    t = load_table("gpu", sp, [3, 64, 64], 1, path)
    s = Subnet(4, [1, 3, 2, 3], ["shared", "mix", "task", "mix"], [0.5, 1.0, 0.75, 0.5])
    # stem + per block attention[heads] + ffn[hidden]; mix runs both FFNs: 2 x hidden
    expect = 0.5 + (0.1 + 0.384) + (0.3 + 1.536) + (0.2 + 0.576) + (0.3 + 0.768)
    assert t.latency(s) == pytest.approx(expect, abs=1e-12)
    assert [n for n, _ in t.terms(s)][:3] == ["stem", "block0.attention[1]", "block0.ffn[384]"]
    assert not t.measured
    # a second geometry is kept beside the first, one of the same geometry replaced
    other = table(sp, geometry={**table(sp)["geometry"], "batch_size": 8}, stem=2.0)
    write_table("gpu", other, path)
    write_table("gpu", table(sp, stem=0.7), path)
    assert [x["stem"] for x in json.load(open(path))["tables"]] == [2.0, 0.7]
    assert load_table("gpu", sp, [3, 64, 64], 8, path).latency(s) == pytest.approx(expect + 1.5)


@pytest.mark.parametrize("change, message", [
    ({"ffn": {"384": 0.1}}, r"ffn: no entry for \[192, 576, 768, 1152, 1536\] hidden units"),
    ({"attention": {"1": 0.1, "2": -1.0, "3": 0.2}}, r"tables\[0\]\.attention\.2: -1\.0 is out of range; allowed: > 0"),
    ({"provenance": None}, "provenance: required"),
    ({"stem": "fast"}, "tables\\[0\\]\\.stem: expected float, got str 'fast'"),
    ({"attention": {"one": 0.1}}, "keys must be integers"),
])
def test_bad_latency_tables_name_the_file_and_key(tmp_path, change, message):
    sp = space()
    path = write_table("xpu", table(sp, **change), str(tmp_path / "xpu.json"))
    with pytest.raises(ConfigError, match=message) as e:
        load_table("xpu", sp, [3, 64, 64], 1, path)
    assert "xpu.json: tables[0]" in str(e.value)


def test_missing_or_mismatched_tables_say_what_to_do(tmp_path):
    sp = space()
    with pytest.raises(ConfigError, match="latency table not found: .*build_latency_table.py"):
        load_table("npu", sp, [3, 64, 64], 1, str(tmp_path / "npu.json"))
    path = write_table("npu", table(sp), str(tmp_path / "npu.json"))
    with pytest.raises(ConfigError, match=r"no table for geometry .*'image_shape': \[3, 224, 224\]"):
        load_table("npu", sp, [3, 224, 224], 1, path)
    with pytest.raises(ConfigError, match="table is for chip 'npu', not 'arm'"):
        load_table("arm", sp, [3, 64, 64], 1, path)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="bad.json: invalid JSON"):
        load_table("gpu", sp, [3, 64, 64], 1, str(tmp_path / "bad.json"))


def test_shipped_tables_cover_the_quickstart_space_and_state_provenance():
    from ppufo.utils.config import load_config
    cfg = load_config(f"{ROOT}/configs/supernet_quickstart.yaml")
    sp = space()
    for chip in ("cpu_x86", "cpu_x86_ort", "cpu_x86_int8", "gpu", "xpu", "npu", "arm"):
        t = load_table(chip, sp, cfg["Global"]["image_shape"], cfg["Search"]["batch_size"])
        assert t.provenance["how"] and t.measured == chip.startswith("cpu_x86"), chip
        assert t.latency(sp.smallest()) < t.latency(sp.largest())
    ort = load_table("cpu_x86_ort", sp, cfg["Global"]["image_shape"], cfg["Search"]["batch_size"]).provenance
    assert ort["how"].startswith("ONNX Runtime") and ort["load"].startswith("1-minute load average")  # stated
    int8 = load_table("cpu_x86_int8", sp, cfg["Global"]["image_shape"], cfg["Search"]["batch_size"]).provenance
    assert "(cpu_x86_int8, 1 CPU thread(s)) on int8 probes (oneDNN int8 kernels for Quant.int8_ops ['fc']" in int8["how"]


def test_a_search_on_the_int8_chip_reads_its_table_and_refuses_to_time_float_subnets(tmp_path):
    """The search exports candidate subnets in float; timed on cpu_x86_int8 they would be refused (or,
    without the refusal, timed in fp32 under the int8 chip's name), so it composes the chip's table."""
    from ppufo.nas.latency import MeasuredLatency, TableLatency, build_latency
    from ppufo.utils.config import load_config
    cfg = load_config(f"{ROOT}/configs/supernet_quickstart.yaml", ["Search.chip=cpu_x86_int8"])

    class Supernet:
        space = space()

    src = build_latency(cfg["Search"], cfg, Supernet, "person")  # Search.latency auto
    assert isinstance(src, TableLatency) and src.measured and "cpu_x86_int8.json: tables" in src.table.where
    with pytest.raises(ConfigError, match=r"Search.chip=cpu_x86_int8 runs int8 models, and the search exports its "
                                          r"candidate subnets in float \(their int8 accuracy is simulated\); use "
                                          r"Search.latency=table"):
        build_latency(dict(cfg["Search"], latency="measure"), cfg, Supernet, "person")
    with pytest.raises(ConfigError, match="Search.chip=gpu_trt_int8 runs int8 models"):
        MeasuredLatency(cfg, Supernet, "person", "gpu_trt_int8")


# -- search with counted measurements ----------------------------------------------------------------
class Counted:
    """A fake measurement: a known function of the subnet, counting calls, optionally
    interrupted after ``stop_after`` calls."""

    def __init__(self, fn, stop_after=None):
        self.fn, self.calls, self.stop_after = fn, [], stop_after

    def __call__(self, s):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(s)
        return self.fn(s)


def fake_accuracy(sp):
    return lambda s: 0.5 + 0.4 * np.tanh(sp.params(s) / 4e6) + 0.01 * s.paths.count("task")


def fake_latency(sp):
    return lambda s: 1.0 + sum(0.2 * h + m / 1000 for h, (_, m) in zip(s.heads, sp.block_widths(s)))


def make_search(sp, tmp_path, acc, lat=None, budget_type="params", budget=3e6, **kw):
    ctx = {"measure": "test"}
    accuracy = {"person": Measure(acc, MeasureCache(str(tmp_path / "acc.jsonl"), ctx), "acc")}
    latency = Measure(lat, MeasureCache(str(tmp_path / "lat.jsonl"), ctx), "lat") if lat else None
    opts = dict(num_samples=12, num_candidates=300, num_verify=3, seed=0, log=lambda m: None)
    opts.update(kw)
    return BudgetedSearch(sp, accuracy, budget_type, budget, latency, **opts)


def test_an_interrupted_search_resumes_without_measuring_again(tmp_path):
    sp = space()
    first = Counted(fake_accuracy(sp), stop_after=7)
    with pytest.raises(KeyboardInterrupt):
        make_search(sp, tmp_path, first).run()
    assert len(first.calls) == 7
    with open(tmp_path / "acc.jsonl", "a") as f:
        f.write('{"key": "0.5,1,0.3')  # the write an interruption cut short
    second = Counted(fake_accuracy(sp))
    res = make_search(sp, tmp_path, second).run()["person"]
    done = {subnet_key(sp, s) for s in first.calls}
    assert not done & {subnet_key(sp, s) for s in second.calls}  # nothing measured twice
    assert len(first.calls) + len(second.calls) == 12 + 3  # samples + verified candidates
    third = Counted(fake_accuracy(sp))
    again = make_search(sp, tmp_path, third).run()["person"]
    assert third.calls == [] and again["subnet"] == res["subnet"]  # a full rerun measures nothing
    with pytest.raises(ConfigError, match="measured for {'measure': 'test'}, but this search measures"):
        MeasureCache(str(tmp_path / "acc.jsonl"), {"measure": "other"})


def test_cache_lines_are_checked(tmp_path):
    path = tmp_path / "c.jsonl"
    MeasureCache(str(path), {"a": 1})
    with open(path, "a") as f:
        f.write("not json\n")
        f.write('{"key": "k", "value": 1.0}\n')
    with pytest.raises(ConfigError, match=r"c.jsonl:2: malformed record"):
        MeasureCache(str(path), {"a": 1})


@pytest.mark.parametrize("budget_type, budget", [("params", 2.5e6), ("flops", 9.0e7), ("latency_ms", 8.0)])
def test_the_chosen_subnet_respects_the_budget_and_is_the_best_measured_within_it(tmp_path, budget_type, budget):
    sp = space()
    acc, lat = fake_accuracy(sp), fake_latency(sp)
    cost = {"params": sp.params, "flops": sp.flops, "latency_ms": lat}[budget_type]
    counted = Counted(acc)
    res = make_search(sp, tmp_path, counted, lat if budget_type == "latency_ms" else None, budget_type,
                      budget).run()["person"]
    chosen = res["subnet"]
    assert cost(chosen) <= budget and res["measured"][budget_type] == pytest.approx(cost(chosen))
    within = [acc(s) for s in counted.calls if cost(s) <= budget]
    assert res["measured"]["accuracy"] == pytest.approx(max(within))
    assert any(cost(s) > budget for s in counted.calls)  # the budget did exclude measured subnets
    assert len(res["verified"]) == 3 and all(v["subnet"] not in [s.to_dict() for s in counted.calls[:12]]
                                             for v in res["verified"])


def test_budget_and_search_settings_are_checked(tmp_path):
    sp = space()
    acc = fake_accuracy(sp)
    with pytest.raises(ConfigError, match="no measured subnet of person is within params <= 1000"):
        make_search(sp, tmp_path, acc, budget=1000).run()
    for kw, msg in [({"budget_type": "watts"}, "budget_type='watts'"), ({"budget": -1}, "positive number"),
                    ({"budget_type": "latency_ms"}, "needs a latency source"), ({"num_samples": 2}, "num_samples 2")]:
        with pytest.raises(ConfigError, match=msg):
            make_search(sp, tmp_path, acc, **kw)


def test_latency_table_search_composes_instead_of_measuring(tmp_path):
    from ppufo.nas.latency import TableLatency
    sp = space()
    path = write_table("gpu", table(sp), str(tmp_path / "gpu.json"))
    src = TableLatency("gpu", sp, [3, 64, 64], 1, path)
    acc = Counted(fake_accuracy(sp))
    accuracy = {"person": Measure(acc, MeasureCache(str(tmp_path / "a.jsonl"), {}), "acc")}
    res = BudgetedSearch(sp, accuracy, "latency_ms", 3.0, src, latency_exact=True, num_samples=10,
                         num_candidates=200, num_verify=2, log=lambda m: None).run()["person"]
    assert res["measured"]["latency_ms"] == pytest.approx(src(res["subnet"])) and src(res["subnet"]) <= 3.0


def test_pareto_front_keeps_only_undominated_points():
    from ppufo.nas.pareto import pareto_front
    pts = [(3, 0.8), (1, 0.5), (2, 0.5), (2, 0.7), (4, 0.75), (5, 0.9)]
    assert pareto_front(pts) == [1, 3, 0, 5]


# -- the search as the tool runs it, on a tiny supernet, then extraction and export of its choice --------
def test_search_tool_writes_a_choice_that_extracts_and_exports(demo_root, tmp_path):
    import os

    import paddle

    from ppufo.arch import build_model
    from ppufo.engine.exporter import export_task
    from ppufo.nas.extract import extract
    from ppufo.nas.latency import MeasuredLatency
    from ppufo.arch.space import load_subnet
    from ppufo.utils.checkpoint import save_checkpoint
    from ppufo.utils.logger import get_logger
    from helpers import tiny_supernet_config
    paddle.seed(0)
    model = build_model(tiny_supernet_config(demo_root, tmp_path), {"face": 5, "person": 6, "vehicle": 7, "product": 8})
    save_checkpoint(str(tmp_path / "super"), model, states={"iteration": 0})
    from ppufo.nas.budget import allinone_cost
    deployed = allinone_cost(model.space, "params")  # a relative budget: 1.2e5 parameters
    cfg = tiny_supernet_config(demo_root, tmp_path, f"Global.pretrained_model={tmp_path}/super", "Search.val_sets=null",
                               f"Search.budget={{params: {1.2e5 / deployed!r}}}", "Search.num_samples=5",
                               "Search.num_candidates=50", "Search.num_verify=2", f"Search.cache_dir={tmp_path}/cache",
                               f"Search.save_dir={tmp_path}/search")
    from ppufo.arch.trained import load_trained_model
    from ppufo.nas.configured import build_search, write_result
    supernet = load_trained_model(cfg)
    res = build_search(cfg, supernet, ["person"], get_logger()).run()["person"]
    path = write_result(cfg, supernet.space, res, cfg["Search"]["save_dir"])
    out = json.load(open(path))
    assert path.endswith("person_cpu_x86.json") and out["task"] == "person" and out["chip"] == "cpu_x86"
    assert out["runtime"] == {"chip": "cpu_x86", "backend": "paddle", "deploy_config": "deploy/configs/cpu_x86.yaml"}
    assert out["params"] <= 1.2e5 and out["measured"]["params"] == out["params"]
    assert out["budget"] == {"type": "params", "value": pytest.approx(1.2e5), "fraction_of_allinone": 1.2e5 / deployed,
                             "allinone": deployed}
    red = out["reduction"]["params"]
    assert (red["subnet"], red["allinone"], red["largest"]) == (out["params"], deployed, supernet.space.params(
        supernet.space.largest()))
    assert red["vs_allinone"] == pytest.approx(out["params"] / deployed - 1)
    assert os.path.getsize(path.replace(".json", "_pareto.png")) > 10_000
    lines = open(tmp_path / "cache" / "accuracy_person_mAP.jsonl").read().splitlines()
    assert len(lines) == 1 + 5 + len(out["verified"]) and len(out["verified"]) % 2 == 0  # rounds of 2
    assert json.loads(lines[0])["context"]["val_sets"][0]["name"] == "Market1501"
    subnet = load_subnet(path)  # what tools/extract_subnet.py reads from Extract.subnet
    assert subnet.to_dict() == out["subnet"]
    _, plain = extract(cfg, supernet, ["person"], subnet)
    export_task(plain, "person", cfg, str(tmp_path / "export"))
    from ppufo.inference.predictor import FeaturePredictor
    x = np.random.RandomState(0).rand(2, 3, 32, 32).astype("float32")
    supernet.set_subnets({"person": subnet})
    np.testing.assert_allclose(FeaturePredictor(str(tmp_path / "export"))(x),
                               supernet.embed(paddle.to_tensor(x), "person").numpy(), atol=1e-4)
    ms = MeasuredLatency(cfg, supernet, "person", "cpu_x86", warmup=1, repeats=3, timer="thread_cpu")(subnet)
    assert 0 < ms < 1000
    with pytest.raises(ConfigError, match="thread_cpu counts the calling thread only"):
        MeasuredLatency(cfg, supernet, "person", "cpu_x86", cpu_threads=2, timer="thread_cpu")


class DriftingMachine:
    """A virtual clock whose core slows down 3x over the measurement, and predictors costing
    ``base`` virtual ms each at full speed: what a shared machine does to sequential timing."""

    def __init__(self, bases, total):
        self.now, self.total, self.order = 0.0, total, []
        self.preds = [self.predictor(i, b) for i, b in enumerate(bases)]

    def predictor(self, i, base):
        def run(x):
            self.order.append(i)
            self.now += base * (1 + 2 * min(1.0, self.now / self.total)) / 1e3
        return run

    def clock(self):
        return self.now


def test_interleaved_timing_ranks_subnets_through_drift_that_fools_sequential_timing():
    from ppufo.nas.latency import time_interleaved
    bases = [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]  # true order; the slow-down reverses sequential timing
    total = 30 * sum(bases) / 1e3 * 2
    seq = DriftingMachine(bases[::-1], total)  # timed slowest first, as bad luck would have it
    sequential = [time_interleaved([p], None, 0, 30, 1, seq.clock)[0] for p in seq.preds][::-1]
    assert kendall_tau(sequential, bases) < 0  # the drift beats a 2x real difference
    m = DriftingMachine(bases, total)
    ms = time_interleaved(m.preds, None, 2, 30, 10, m.clock, seed=0)
    assert list(np.argsort(ms)) == list(range(6))  # the true order
    assert len(m.order) == 6 * (2 + 30)  # warm-up + 10 passes of bursts of 3, per predictor
    passes = [m.order[12 + 18 * k:12 + 18 * (k + 1)] for k in range(10)]
    assert all(sorted(set(p)) == list(range(6)) and len(p) == 18 for p in passes)  # every pass visits all
    assert len({tuple(p[::3]) for p in passes}) > 1  # in a fresh order


class Grouped(Counted):
    """A measurement taking subnets in groups, as MeasuredLatency does."""
    group = 4

    def __init__(self, fn):
        super().__init__(fn)
        self.groups = []

    def measure_many(self, subnets):
        self.groups.append(len(subnets))
        return [self(s) for s in subnets]


def test_grouped_measurements_are_cached_per_subnet_and_resume(tmp_path):
    from ppufo.nas.cache import measure
    sp = space()
    subnets = sample_subnets(sp, 10, np.random.RandomState(0))
    lat = fake_latency(sp)
    first = Grouped(lat)
    cache = MeasureCache(str(tmp_path / "lat.jsonl"), {"m": 1})
    np.testing.assert_allclose(measure(sp, subnets[:6], first, cache, "lat"), [lat(s) for s in subnets[:6]])
    assert first.groups == [4, 2]
    second = Grouped(lat)
    values = measure(sp, subnets, second, MeasureCache(str(tmp_path / "lat.jsonl"), {"m": 1}), "lat")
    np.testing.assert_allclose(values, [lat(s) for s in subnets])
    assert second.groups == [4] and len(second.calls) == 4  # only the 4 not cached


def test_latency_is_the_configured_quantile_of_the_runs():
    from ppufo.nas.latency import MeasuredLatency, time_interleaved
    costs = iter([5.0, 1.0, 2.0, 9.0, 3.0] * 2)
    now = [0.0]

    def pred(x):
        now[0] += next(costs) / 1e3
    one = [time_interleaved([pred], None, 0, 5, 1, lambda: now[0], quantile=q)[0] for q in (0.5, 0.0)]
    np.testing.assert_allclose(one, [3.0, 1.0])  # median and minimum of 5, 1, 2, 9, 3 ms
    with pytest.raises(ConfigError, match="Search.quantile=1.5"):
        MeasuredLatency({}, None, "person", "cpu_x86", quantile=1.5)


@pytest.mark.parametrize("chip, runtime", [("cpu_x86", "Paddle Inference 3."), ("cpu_x86_ort", "ONNX Runtime 1."),
                                           ("cpu_x86_int8", "Paddle Inference 3.")])
def test_build_latency_table_measures_every_entry_the_space_needs(tmp_path, chip, runtime):
    import re
    import subprocess
    import sys
    if chip == "cpu_x86_ort":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("paddle2onnx")
    out = tmp_path / f"{chip}.json"
    cmd = [sys.executable, "tools/build_latency_table.py", "-c", "configs/supernet_quickstart.yaml", "-o",
           "Global.image_shape=[3,32,32]", "Arch.Backbone.embed_dim=48", "Arch.Backbone.depth=3",
           "Arch.Backbone.depths=[2,3]", f"Search.chip={chip}", "Search.warmup=1", "Search.repeats=4",
           "Search.rounds=2", "Search.timer=thread_cpu", "--copies", "2", "--output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sp = SearchSpace(48, 3, 3, 16, 4.0, [2, 3], [1, 2, 3], [0.25, 0.5, 0.75, 1.0], img_size=(32, 32))
    t = load_table(chip, sp, [3, 32, 32], 1, str(out))  # validates: every needed entry, positive
    assert t.measured and "interleaved over 2 passes" in t.provenance["how"]
    assert t.provenance["how"].startswith(runtime) and f"({chip}, 1 CPU thread(s))" in t.provenance["how"]
    assert "1-minute load average" in t.provenance["load"]  # a table built under load says so
    # an int8 chip times quantised probes: Paddle's pass statistics, one per predictor in build order,
    # show each op probe's 2 copies x 2 Linear layers on oneDNN's int8 fc (the stem has none, its neck
    # is a bias-free matmul that stays fp32, as in ppufo-quantize's models)
    fc = [int(n) for n in re.findall(r"quantized (\d+) fc ops(?! with)", proc.stderr)]
    assert fc == ([0] + [4] * 9 if chip == "cpu_x86_int8" else []), fc
    assert ("on int8 probes" in t.provenance["how"]) == (chip == "cpu_x86_int8")
    assert sorted(t.ops["ffn"]) == required_entries(sp)["ffn"]
    # Tiny ops are noise-dominated, so width order is not asserted; composition is: one more block
    # of the same widths adds exactly that block's measured attention + FFN entries.
    big = sp.largest()
    shallow = Subnet(2, big.heads[:2], big.paths[:2], big.ratios[:2])
    hidden = sp.block_widths(big)[2][1]
    assert t.latency(big) - t.latency(shallow) == pytest.approx(t.ops["attention"][3] + t.ops["ffn"][hidden])
    assert t.latency(shallow) > t.stem > 0


class Drifting(Grouped):
    """Grouped timing whose level changes from one group to the next, as a shared core's does."""
    group = 40

    def __init__(self, fn, levels):
        super().__init__(fn)
        self.levels = list(levels)

    def measure_many(self, subnets):
        level = self.levels[len(self.groups)]
        return [level * v for v in super().measure_many(subnets)]


def test_verified_latencies_are_put_on_the_samples_level(tmp_path):
    from ppufo.nas.search import REFERENCES
    sp = space()
    lat = fake_latency(sp)
    drifting = Drifting(lat, [1.0, 1.5])  # the verified candidates time 1.5x slower than the samples did
    res = make_search(sp, tmp_path, fake_accuracy(sp), drifting, "latency_ms", 8.0, verify_rounds=1).run()["person"]
    assert drifting.groups == [12, 3 + REFERENCES]  # the samples, then the verified with 8 references
    sampled = {subnet_key(sp, c) for c in drifting.calls[:12]}
    assert all(subnet_key(sp, s) in sampled for s in drifting.calls[15:])
    assert res["verify_levels"] == [pytest.approx({"median": 1 / 1.5, "min": 1 / 1.5, "max": 1 / 1.5})]
    for v in res["verified"]:  # the true latency, not 1.5x it; predicted within budget
        assert v["latency_ms"] == pytest.approx(lat(Subnet.from_dict(v["subnet"])))
        assert v["predicted_latency_ms"] <= 8.0
    again = Drifting(lat, [])
    rerun = make_search(sp, tmp_path, fake_accuracy(sp), again, "latency_ms", 8.0, verify_rounds=1).run()["person"]
    assert again.groups == [] and rerun["verify_levels"] == [None]  # all cached, leveled: nothing timed
    assert rerun["verified"] == res["verified"]


def test_verification_goes_on_in_rounds_until_one_is_within_budget_and_better(tmp_path):
    sp = space()

    def acc(s):  # favours 3 heads in the first block ...
        return fake_accuracy(sp)(s) + 0.2 * (s.heads[0] == 3)

    def lat(s):  # ... which costs what position-free latency features cannot see
        return fake_latency(sp)(s) + 3.0 * (s.heads[0] == 3)
    counted = Counted(lat)
    res = make_search(sp, tmp_path, Counted(acc), counted, "latency_ms", 5.0, verify_rounds=3).run()["person"]
    rounds = [v["round"] for v in res["verified"]]
    assert rounds == sorted(rounds) and rounds[-1] >= 2 and len(res["verified"]) == 3 * rounds[-1]
    best = max(acc(s) for s in counted.calls[:12] if lat(s) <= 5.0)  # the best sample within budget
    for r in range(1, rounds[-1] + 1):
        this = [v for v in res["verified"] if v["round"] == r]
        assert all(v["predicted_latency_ms"] <= 5.0 for v in this)
        improved = any(v["latency_ms"] <= 5.0 and v["accuracy"] > best for v in this)
        assert improved == (r == rounds[-1]) or (r == 3 and not improved)  # why each round ended
        best = max([best] + [v["accuracy"] for v in this if v["latency_ms"] <= 5.0])
    assert any(v["latency_ms"] > 5.0 for v in res["verified"] if v["round"] == 1)  # the cost predictor erred
    keys = [subnet_key(sp, s) for s in counted.calls]
    assert len(keys) == len(set(keys)) == 12 + len(res["verified"])  # nothing verified twice
    assert res["measured"]["accuracy"] == pytest.approx(best)  # the best measured within budget
    assert len(res["verify_levels"]) == rounds[-1]


def test_chip_predictors_get_their_runtime_and_tensorrt_the_timed_batch(monkeypatch):
    import ppufo.nas.latency as latency
    seen = []
    monkeypatch.setattr(latency, "build_predictor", lambda d, backend, **kw: seen.append((backend, kw)))
    latency.chip_predictor("m", "gpu_trt_fp16", 1, batch_size=4)
    latency.chip_predictor("m", "cpu_x86", 2, batch_size=4)
    latency.chip_predictor("m", "cpu_x86_ort", 3, batch_size=4)
    latency.chip_predictor("m", "cpu_x86_int8", 1, batch_size=4)
    (trt_backend, trt), (pi_backend, pi), ort, int8 = seen
    assert int8 == ("paddle", {"device": "cpu", "enable_mkldnn": True, "precision": "int8", "cpu_threads": 1})
    assert (trt_backend, trt["use_tensorrt"], trt["max_batch_size"], trt["opt_batch_size"]) == ("paddle", True, 4, 4)
    assert (pi_backend, pi) == ("paddle", {"device": "cpu", "enable_mkldnn": True, "cpu_threads": 2})
    assert ort == ("onnxruntime", {"device": "cpu", "cpu_threads": 3})  # no Paddle Inference option reaches ORT


def test_the_ort_chip_is_timed_through_onnx_runtime_on_the_converted_probe(tmp_path, monkeypatch):
    """cpu_x86_ort: present where ORT and paddle2onnx are; an exported model is converted on first use
    and timed with an ORT session of Search.cpu_threads threads."""
    import importlib.util

    import paddle

    from ppufo.chips import chip_absent
    from ppufo.inference.predictor import OnnxPredictor
    from ppufo.nas import latency
    pytest.importorskip("onnxruntime")
    pytest.importorskip("paddle2onnx")
    d = str(tmp_path / "probe")
    paddle.seed(0)
    probe = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(3 * 8 * 8, 16))
    probe.eval()
    from ppufo.engine.exporter import save_inference
    save_inference(probe, [3, 8, 8], f"{d}/inference")
    with open(f"{d}/inference.yml", "w") as f:
        f.write("image_shape: [3, 8, 8]\n")
    pred = latency.chip_predictor(d, "cpu_x86_ort", 1)
    assert isinstance(pred, OnnxPredictor) and (tmp_path / "probe" / "inference.onnx").is_file()
    assert pred.session.get_session_options().intra_op_num_threads == 1
    ms = latency.time_model_dirs([d], "cpu_x86_ort", 1, warmup=1, repeats=3, timer="thread_cpu")
    assert len(ms) == 1 and 0 < ms[0] < 1000
    src = latency.MeasuredLatency({}, None, "person", "cpu_x86_ort", timer="thread_cpu").source
    assert src.startswith("ONNX Runtime (cpu_x86_ort) on this machine, 1 thread(s), batch 1"), src
    assert chip_absent("cpu_x86_ort") is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "paddle2onnx" else real(m, *a))
    assert chip_absent("cpu_x86_ort") == "paddle2onnx not installed (pip install paddle2onnx onnxruntime)"
    assert chip_absent("cpu_x86") is None


def test_extracted_config_keeps_the_training_memory_switches():
    from ppufo.nas.extract import extracted_config
    cfg = {"Arch": {"name": "MultiTaskModel", "Backbone": {"name": "ViTSupernet", "embed_dim": 48, "depth": 3,
                                                           "recompute": True, "fused_attention": False,
                                                           "drop_path_rate": 0.1, "depths": [2, 3]}},
           "Tasks": {"person": {}, "face": {}}, "Loss": {"task_weights": {"person": 1.0, "face": 2.0}}}
    sp = SearchSpace(48, 3, 3, 16, 4.0, [2, 3], [1, 2, 3], [0.25, 0.5, 0.75, 1.0], img_size=(32, 32))
    bb = extracted_config(cfg, ["person"], sp.largest(), sp)["Arch"]["Backbone"]
    assert (bb["recompute"], bb["fused_attention"], bb["drop_path_rate"]) == (True, False, 0.1)
    assert "depths" not in bb and bb["depth"] == 3


class Stepped(Grouped):
    """Grouped timing that reports its exports and timing passes, as MeasuredLatency does."""
    group, rounds = 40, 3

    def steps(self, n):
        return n + self.rounds

    def measure_many(self, subnets, tick=None):
        for _ in range(len(subnets) + self.rounds):
            tick()
        return super().measure_many(subnets)


def test_a_long_grouped_measurement_reports_progress_outside_a_terminal(tmp_path, caplog):
    """A group of 40 subnets timed together used to show nothing for minutes (tqdm is silent
    outside a terminal, and its bar moved only when the whole group returned)."""
    import logging

    from ppufo.nas.cache import MeasureCache, measure
    sp = space()
    subnets = [sp.largest(), sp.smallest()] + [sp.sample(np.random.RandomState(i)) for i in range(8)]
    fn = Stepped(fake_latency(sp))
    with caplog.at_level(logging.INFO, logger="ppufo"):
        values = measure(sp, subnets, fn, MeasureCache(str(tmp_path / "lat.jsonl"), {"m": 1}), "latency")
    np.testing.assert_allclose(values, [fake_latency(sp)(s) for s in subnets])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("latency:")]
    n = len({subnet_key(sp, s) for s in subnets})
    assert lines[0] == f"latency: 0/{n + 3} ..." and lines[-1].startswith(f"latency: {n + 3}/{n + 3}, elapsed ")
