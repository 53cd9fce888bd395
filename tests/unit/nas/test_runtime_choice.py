"""Search.chip=cpu_x86_any: the search picks the runtime (Paddle Inference or ONNX Runtime) with the
subnet. Stub runtimes whose order flips with the subnet's size check that every reported runtime is
the faster one and that the budget admits what only the faster runtime runs in time; one real
measurement checks that both runtimes are timed in the same group."""
import json
import logging

import numpy as np
import pytest

from ppufo.arch.space import Subnet
from ppufo.nas.cache import MeasureCache, subnet_key
from ppufo.nas.latency_table import write_table
from ppufo.nas.runtime_choice import FastestTable, fastest, runtime_lookup
from ppufo.nas.search import BudgetedSearch, Measure
from ppufo.utils.errors import ConfigError

from test_nas_search import Counted, fake_accuracy, fake_latency, make_search, space, table  # the stub search

RUNTIMES = ("cpu_x86", "cpu_x86_ort")
BUDGET = 4.0


def runtime_latencies(sp):
    """{chip: subnet -> ms}: ONNX Runtime has less overhead per run, Paddle Inference is faster per
    block, so ORT wins on small subnets and Paddle on large ones (they cross at 3.33 ms)."""
    pi = fake_latency(sp)
    return {"cpu_x86": pi, "cpu_x86_ort": lambda s: 0.3 + 1.3 * (pi(s) - 1.0)}


class StubChoice(Counted):
    """A runtime-choice measurement as MeasuredLatency makes it: the fastest runtime's ms, and each
    runtime's ratio to it as ``detail``; ``levels``: how much slower each group times (a shared core)."""
    group = 40
    runtimes = RUNTIMES

    def __init__(self, sp, levels=()):
        self.each = runtime_latencies(sp)
        super().__init__(lambda s: min(f(s) for f in self.each.values()))
        self.levels, self.groups, self.ratios = list(levels), [], {}

    def measure_many(self, subnets):
        level = self.levels[len(self.groups)] if self.levels else 1.0
        self.groups.append(len(subnets))
        out = []
        for s in subnets:
            ms = {c: f(s) for c, f in self.each.items()}
            self.ratios[s.to_json()] = {c: v / min(ms.values()) for c, v in ms.items()}
            out.append(level * self(s))
        return out

    def detail(self, s):
        return self.ratios.get(s.to_json())


def choice_search(sp, tmp_path, stub, **kw):
    search = make_search(sp, tmp_path, fake_accuracy(sp), stub, "latency_ms", BUDGET, **kw)
    search.runtime_of = runtime_lookup(search.latency, sp)
    return search


def test_the_search_reports_the_faster_runtime_of_every_subnet_and_uses_it_against_the_budget(tmp_path):
    sp = space()
    stub = StubChoice(sp)
    res = choice_search(sp, tmp_path, stub).run()["person"]
    each = runtime_latencies(sp)
    true = {c: f(res["subnet"]) for c, f in each.items()}
    faster = min(true, key=true.get)
    assert res["runtime"] == {"chip": faster, "backend": {"cpu_x86": "paddle", "cpu_x86_ort": "onnxruntime"}[faster],
                              "latency_ms": pytest.approx(true)}
    assert res["measured"]["latency_ms"] == pytest.approx(min(true.values())) and min(true.values()) <= BUDGET
    # the budget admitted it through its faster runtime only: on a fixed runtime it would be out
    assert max(true.values()) > BUDGET
    for v in res["verified"]:
        s = Subnet.from_dict(v["subnet"])
        want = {c: f(s) for c, f in each.items()}
        assert v["runtime"]["chip"] == min(want, key=want.get) and v["runtime"]["latency_ms"] == pytest.approx(want)
    # the stub's runtimes do cross: both won somewhere among the measured subnets
    winners = {min(RUNTIMES, key=lambda c: each[c](s)) for s in stub.calls}
    assert winners == set(RUNTIMES)


def test_each_runtimes_latency_survives_the_verification_rescaling_and_a_resume(tmp_path):
    """Verified subnets time 1.5x slower than the samples did; the search rescales them onto the
    samples' level. The per-runtime latencies, cached as ratios to the fastest, follow."""
    sp = space()
    res = choice_search(sp, tmp_path, StubChoice(sp, levels=[1.0, 1.5]), verify_rounds=1).run()["person"]
    assert res["verify_levels"][0]["median"] == pytest.approx(1 / 1.5)
    each = runtime_latencies(sp)
    for v in res["verified"]:
        s = Subnet.from_dict(v["subnet"])
        assert v["runtime"]["latency_ms"] == pytest.approx({c: f(s) for c, f in each.items()})
    again = StubChoice(sp)
    rerun = choice_search(sp, tmp_path, again, verify_rounds=1).run()["person"]
    assert again.calls == [] and rerun["runtime"] == res["runtime"]  # from the cache's records alone
    records = [json.loads(line) for line in open(tmp_path / "lat.jsonl").read().splitlines()[1:]]
    assert all(min(r["detail"].values()) == pytest.approx(1.0) for r in records)


def test_a_cache_without_per_runtime_records_is_refused(tmp_path):
    sp = space()
    s = sp.smallest()
    cache = MeasureCache(str(tmp_path / "lat.jsonl"), {"m": 1})
    cache.add(subnet_key(sp, s), s, 1.5, 0.1)  # measured by a single-runtime search
    lookup = runtime_lookup(Measure(StubChoice(sp), cache, "lat"), sp)
    with pytest.raises(ConfigError, match=r"lat.jsonl: no per-runtime latency of subnet .*use another Search.cache_dir"):
        lookup(s)


def test_runtime_tables_compose_per_runtime_and_the_search_takes_the_faster(tmp_path, monkeypatch, caplog):
    import ppufo.chips as chips
    sp = space()
    monkeypatch.setattr(chips, "TABLES", str(tmp_path))
    prov = {"measured": True, "how": "test values", "machine": "one machine"}
    write_table("cpu_x86", table(sp, provenance=prov), str(tmp_path / "cpu_x86.json"))  # stem 0.5, heads 0.1 each
    write_table("cpu_x86_ort", table(sp, provenance=prov, stem=0.1,  # less overhead, dearer attention
                                     attention={str(h): 0.25 * h for h in (1, 2, 3)}), str(tmp_path / "cpu_x86_ort.json"))
    ft = FastestTable("cpu_x86_any", sp, [3, 64, 64], 1)
    small, large = sp.smallest(), sp.largest()
    assert ft.warning is None and ft.measured and ft(small) == min(ft.by_runtime(small).values())
    assert fastest(ft.by_runtime(small))["chip"] == "cpu_x86_ort" and fastest(ft.by_runtime(large))["chip"] == "cpu_x86"
    acc = {"person": Measure(Counted(fake_accuracy(sp)), MeasureCache(str(tmp_path / "a.jsonl"), {}), "acc")}
    res = BudgetedSearch(sp, acc, "latency_ms", 2.0, ft, latency_exact=True, num_samples=10, num_candidates=200,
                         num_verify=2, log=lambda m: None, runtime_of=ft.by_runtime).run()["person"]
    by = ft.by_runtime(res["subnet"])
    assert res["runtime"]["chip"] == min(by, key=by.get) and res["measured"]["latency_ms"] == pytest.approx(min(by.values()))
    with pytest.raises(ConfigError, match=r"Search.latency_table=x.json: Search.chip=cpu_x86_any composes the shipped "
                                          r"tables of \['cpu_x86', 'cpu_x86_ort'\]"):
        FastestTable("cpu_x86_any", sp, [3, 64, 64], 1, "x.json")
    write_table("cpu_x86", table(sp, provenance={**prov, "machine": "another"}), str(tmp_path / "cpu_x86.json"))
    assert "measured on different machines" in FastestTable("cpu_x86_any", sp, [3, 64, 64], 1).warning


def test_the_shipped_tables_warn_when_their_machines_differ():
    from ppufo.utils.config import load_config
    from helpers import ROOT
    cfg = load_config(f"{ROOT}/configs/supernet_quickstart.yaml")
    ft = FastestTable("cpu_x86_any", space(), cfg["Global"]["image_shape"], 1)
    machines = {t.provenance["machine"] for t in ft.tables.values()}
    assert (ft.warning is None) == (len(machines) == 1)


def test_a_runtime_choice_has_no_table_of_its_own():
    import subprocess
    import sys
    from helpers import ROOT
    proc = subprocess.run([sys.executable, "tools/build_latency_table.py", "-c", "configs/supernet_quickstart.yaml",
                           "-o", "Search.chip=cpu_x86_any"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        "error: Search.chip=cpu_x86_any chooses between ['cpu_x86', 'cpu_x86_ort'] and has no table of its own: build "
        "each of theirs (-o Search.chip=cpu_x86, ...)"), proc.stderr[-2000:]


def test_a_runtime_choice_needs_a_latency_budget_and_is_no_export_target(tmp_path):
    from ppufo.nas.budget import budget_type
    from ppufo.utils.config import load_config
    from helpers import ROOT
    with pytest.raises(ConfigError, match="Search.chip=cpu_x86_any picks the runtime by latency: it needs "
                                          "Search.budget_type: latency_ms .*not params"):
        budget_type({"chip": "cpu_x86_any", "budget": 1e6, "budget_type": "params"})
    assert budget_type({"chip": "cpu_x86_any", "budget": {"latency_ms": 0.5}, "budget_type": "params"}) == "latency_ms"
    path = f"{ROOT}/configs/supernet_quickstart.yaml"
    assert load_config(path, ["Search.chip=cpu_x86_any"])["Search"]["chip"] == "cpu_x86_any"
    with pytest.raises(ConfigError, match="Export.chip: 'cpu_x86_any' is not one of"):
        load_config(path, ["Export.chip=cpu_x86_any"])


def test_the_result_file_names_the_runtime_and_its_deploy_config(tmp_path):
    from ppufo.nas.budget import Budget
    from ppufo.nas.configured import write_result
    sp = space()
    res = choice_search(sp, tmp_path, StubChoice(sp)).run()["person"]
    res["budget"] = Budget("latency_ms", BUDGET)
    config = {"Search": {"chip": "cpu_x86_any", "metric": "mAP"}, "Global": {"pretrained_model": "m"}}
    out = json.load(open(write_result(config, sp, res, str(tmp_path / "out"))))
    assert out["chip"] == "cpu_x86_any" and out["runtime"]["chip"] in RUNTIMES
    assert out["runtime"]["deploy_config"] == f"deploy/configs/{out['runtime']['chip']}.yaml"
    assert out["runtime"]["latency_ms"][out["runtime"]["chip"]] == pytest.approx(out["measured"]["latency_ms"])
    config["Search"]["chip"] = "cpu_x86_ort"
    del res["runtime"]
    out = json.load(open(write_result(config, sp, res, str(tmp_path / "out"))))
    assert out["runtime"] == {"chip": "cpu_x86_ort", "backend": "onnxruntime",
                              "deploy_config": "deploy/configs/cpu_x86_ort.yaml"}


def test_a_measured_runtime_choice_times_both_runtimes_of_each_subnet_in_one_group(demo_root, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("paddle2onnx")
    import paddle

    from helpers import tiny_supernet_config
    from ppufo.arch import build_model
    from ppufo.nas import latency
    paddle.seed(0)
    cfg = tiny_supernet_config(demo_root, tmp_path)
    supernet = build_model(cfg, {"face": 5, "person": 6, "vehicle": 7, "product": 8})
    supernet.eval()
    calls, timed = [], latency.time_model_dirs

    def spy(dirs, chip, *args, **kw):
        calls.append((list(dirs), list(chip)))
        return timed(dirs, chip, *args, **kw)
    monkeypatch.setattr(latency, "time_model_dirs", spy)
    m = latency.MeasuredLatency(cfg, supernet, "person", "cpu_x86_any", warmup=1, repeats=4, timer="thread_cpu")
    sp = supernet.space
    subnets = [sp.smallest(), sp.largest()]
    ms = m.measure_many(subnets)
    (dirs, chips), = calls  # one group: each subnet's export on both runtimes
    assert chips == ["cpu_x86", "cpu_x86", "cpu_x86_ort", "cpu_x86_ort"] and dirs[:2] == dirs[2:]
    for s, v in zip(subnets, ms):
        ratios = m.detail(s)
        assert sorted(ratios) == list(RUNTIMES) and min(ratios.values()) == 1.0 and 0 < v < 1000
    assert m.context["runtimes"] == list(RUNTIMES) and m.context["chip"] == "cpu_x86_any"
    assert m.source.startswith("the faster per subnet of Paddle Inference (cpu_x86) / ONNX Runtime (cpu_x86_ort)")
    assert "runtimes" not in latency.MeasuredLatency(cfg, supernet, "person", "cpu_x86").context  # old caches hold


def test_a_search_on_cpu_x86_any_measures_both_runtimes_and_writes_the_faster(demo_root, tmp_path):
    """The search as the tool builds it (build_search, write_result) on a tiny supernet, timed for real."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("paddle2onnx")
    import paddle

    from helpers import tiny_supernet_config
    from ppufo.arch import build_model
    from ppufo.arch.trained import load_trained_model
    from ppufo.nas.configured import build_search, write_result
    from ppufo.utils.checkpoint import save_checkpoint
    paddle.seed(0)
    model = build_model(tiny_supernet_config(demo_root, tmp_path), {"face": 5, "person": 6, "vehicle": 7, "product": 8})
    save_checkpoint(str(tmp_path / "super"), model, states={"iteration": 0})
    cfg = tiny_supernet_config(demo_root, tmp_path, f"Global.pretrained_model={tmp_path}/super", "Search.val_sets=null",
                               "Search.chip=cpu_x86_any", "Search.budget=1000", "Search.num_samples=5",
                               "Search.num_candidates=20", "Search.num_verify=1", "Search.verify_rounds=1",
                               "Search.warmup=1", "Search.repeats=4", "Search.rounds=2", "Search.timer=thread_cpu",
                               "Search.calibration_images=16", f"Search.cache_dir={tmp_path}/cache",
                               f"Search.save_dir={tmp_path}/search")
    supernet = load_trained_model(cfg)
    log = logging.getLogger("test_runtime_choice")
    res = build_search(cfg, supernet, ["person"], log).run()["person"]
    out = json.load(open(write_result(cfg, supernet.space, res, cfg["Search"]["save_dir"])))
    r = out["runtime"]
    assert out["chip"] == "cpu_x86_any" and sorted(r["latency_ms"]) == list(RUNTIMES)
    assert r["chip"] == min(r["latency_ms"], key=r["latency_ms"].get)
    assert r["deploy_config"] == f"deploy/configs/{r['chip']}.yaml"
    assert r["latency_ms"][r["chip"]] == pytest.approx(out["measured"]["latency_ms"])
    head, *records = [json.loads(line) for line in open(f"{tmp_path}/cache/latency_cpu_x86_any_b1.jsonl")]
    assert head["context"]["runtimes"] == list(RUNTIMES) and len(records) >= 6  # 5 samples + 1 verified (+ budget)
    assert all(sorted(r["detail"]) == list(RUNTIMES) and min(r["detail"].values()) == 1.0 for r in records)
