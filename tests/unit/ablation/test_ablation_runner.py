"""The study runner with a stand-in worker (fake_worker.py: no Paddle, fixed scores): resume,
parallel slots, failures, signals, derived runs waiting for their source, and the report."""
import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from helpers import ROOT
from ppufo.ablation.experiment import load_experiment, plan_runs
from ppufo.ablation.report import write_report
from ppufo.ablation.runner import RunFailed, Study
from ppufo.ablation.worker import hold_running_lock
from ppufo.utils.errors import ConfigError

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_worker.py")
EXP = {"base": os.path.join(ROOT, "configs", "quickstart.yaml"), "seeds": [0, 1, 2],
       "arms": {"a": {"overrides": []}, "b": {"overrides": ["Global.max_iters=3"]}},
       "compare": {"sets": ["Market1501", "SOP"], "metrics": ["rank1", "recall@1"],
                   "pairs": [{"arms": ["a", "b"], "claim": "greater"}]}}


def fake_cmd(spec_path):
    return [sys.executable, FAKE, spec_path]


@pytest.fixture
def env(tmp_path, monkeypatch):
    counter = tmp_path / "counter.txt"
    monkeypatch.setenv("FAKE_COUNTER", str(counter))
    for k in ("FAKE_SLEEP", "FAKE_FAIL", "OMP_NUM_THREADS"):
        monkeypatch.delenv(k, raising=False)
    return counter


def events(counter, kind="start"):
    if not counter.exists():
        return []
    return [tuple(line.split()[1:3]) for line in counter.read_text().splitlines() if line.startswith(kind)]


def setup(tmp_path, raw=EXP, name="study"):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    exp = load_experiment(str(path))
    study = str(tmp_path / name)
    return exp, plan_runs(exp, study), study


def cli(tmp_path, *args):
    """ppufo-ablate in-process with the stand-in worker; (exit code, stdout)."""
    from ppufo.cli.ablate import main
    try:
        main([str(tmp_path / "exp.yaml"), *args], worker_cmd=fake_cmd)
    except SystemExit as e:
        return e.code, None
    return 0, None


def test_a_study_reports_means_intervals_and_paired_verdicts(tmp_path, env, capsys):
    exp, runs, study = setup(tmp_path)
    Study(exp, runs, study, 1, worker_cmd=fake_cmd).execute()
    md = write_report(exp, runs, study)
    table = json.loads(open(os.path.join(study, "table.json")).read())
    a = table["arms"]["a"]["cells"]["Market1501/rank1"]  # 0.5, 0.6, 0.7: s = 0.1, t(0.975, 2) = 4.3027
    assert a["values"] == {"0": 0.5, "1": 0.6, "2": 0.7} and a["mean"] == pytest.approx(0.6)
    assert a["half_width"] == pytest.approx(4.3027 * 0.1 / 3 ** 0.5, abs=1e-4)
    d = table["pairs"][0]["cells"]["Market1501/rank1"]  # a - b = 0.1, 0.15, 0.2
    assert d["diffs"] == pytest.approx([0.1, 0.15, 0.2]) and d["verdict"] == "reproduced"
    assert d["low"] == pytest.approx(0.02579, abs=1e-5)
    sop = table["pairs"][0]["cells"]["SOP/recall@1"]  # same SOP numbers in both arms
    assert sop["diffs"] == pytest.approx([0, 0, 0]) and sop["verdict"] == "not resolved"
    assert [(c["set"], c["metric"]) for c in table["cells"]] == [("Market1501", "rank1"), ("SOP", "recall@1")]
    assert table["compute"]["a"]["wall_seconds_mean"] == pytest.approx(2.5)  # train 1+seed, eval 0.5
    assert table["runs"] == {"planned": 6, "finished": 6, "missing": []} and table["commits"] == {"fake": 6}
    assert "| Market1501 | rank1 | 0.6000 ± 0.2484 (n=3) | 0.4500 ± 0.1242 (n=3) |" in md
    assert "| Market1501 | rank1 | a - b | greater | 0: +0.1000, 1: +0.1500, 2: +0.2000 | +0.1500 | " \
           "[+0.0258, +0.2742] | reproduced |" in md
    assert "seeds 0, 1, 2; commit fake." in md
    assert os.path.getsize(os.path.join(study, "plot.png")) > 10_000
    assert sorted(events(env)) == sorted((r.arm, str(r.seed)) for r in runs)
    log = open(os.path.join(study, "ablate.log")).read()
    assert "[6/6] arm=b seed=2 done in 0:00:0" in log and "study ETA 0:00:00, runs left 0" in log
    assert "[1/6] arm=a seed=0 done in" in log and "(Market1501/rank1 0.5000, SOP/recall@1 0.3000)" in log
    assert "fake worker b seed 2" in open(os.path.join(study, "runs", "b", "seed_2", "worker.log")).read()


def test_resume_runs_only_what_is_missing_and_gives_the_same_table(tmp_path, env):
    exp, runs, study = setup(tmp_path)
    Study(exp, runs, study, 1, worker_cmd=fake_cmd).execute()
    whole = write_report(exp, runs, study)
    # interrupted study: one run folder without result.json, one run never started
    _, runs2, study2 = setup(tmp_path, name="study2")
    Study(exp, runs2, study2, 1, worker_cmd=fake_cmd).execute()
    os.remove(os.path.join(study2, "runs", "a", "seed_1", "result.json"))
    import shutil
    shutil.rmtree(os.path.join(study2, "runs", "b", "seed_2"))
    mtimes = {r.index: os.stat(os.path.join(r.run_dir, "result.json")).st_mtime_ns
              for r in runs2 if os.path.exists(os.path.join(r.run_dir, "result.json"))}
    env.write_text("")
    Study(exp, runs2, study2, 1, worker_cmd=fake_cmd).execute()
    assert events(env) == [("a", "1"), ("b", "2")]
    assert all(os.stat(os.path.join(runs2[i - 1].run_dir, "result.json")).st_mtime_ns == t for i, t in mtimes.items())
    assert write_report(exp, runs2, study2) == whole
    env.write_text("")
    Study(exp, runs2, study2, 1, worker_cmd=fake_cmd).execute()  # all done: nothing runs
    assert events(env) == []


def test_report_only_on_a_partial_study_says_what_is_missing(tmp_path, env):
    exp, runs, study = setup(tmp_path)
    Study(exp, runs[:3], study, 1, worker_cmd=fake_cmd).execute()  # seed 0 (a, b), seed 1 (a)
    md = write_report(exp, runs, study)
    assert "Runs finished: 3 of 6 (missing: runs/b/seed_1, runs/a/seed_2, runs/b/seed_2)" in md
    assert "| Market1501 | rank1 | 0.5500 ± 0.6353 (n=2) | 0.4000 (n=1, no interval) |" in md
    assert "| 0: +0.1000 | +0.1000 | none (n=1) | not resolved |" in md


def test_a_failed_run_stops_the_study_with_its_code_and_log_tail(tmp_path, env, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL", "b:0")
    setup(tmp_path)
    code, _ = cli(tmp_path, "--out", str(tmp_path / "study"))
    err = capsys.readouterr().err
    assert code == 3
    assert "runs/b/seed_0 failed (exit code 3)" in err and "boom: the fake worker failed on purpose" in err
    assert events(env) == [("a", "0"), ("b", "0")]  # nothing started after the failure
    assert not os.path.exists(tmp_path / "study" / "table.md")
    monkeypatch.delenv("FAKE_FAIL")
    env.write_text("")
    code, _ = cli(tmp_path, "--out", str(tmp_path / "study"))
    assert code == 0 and ("a", "0") not in events(env) and ("b", "0") in events(env)
    assert len(events(env)) == 5 and "| a - b | greater |" in capsys.readouterr().out


def test_parallel_runs_overlap_and_share_the_cores(tmp_path, env, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "a=1.5,b=0.2")  # b's slot frees first: d must still wait for a
    raw = copy.deepcopy(EXP)
    raw["seeds"] = [0]
    raw["arms"]["d"] = {"from": "a", "precise_bn": {"num_batches": 2}}
    raw["compare"]["pairs"].append({"arms": ["d", "a"], "claim": "less"})
    exp, runs, study = setup(tmp_path, raw)
    Study(exp, runs, study, 2, worker_cmd=fake_cmd, cores=4).execute()
    times = {}
    for line in env.read_text().splitlines():
        kind, arm, _, t, omp = line.split()
        times[(kind, arm)] = float(t)
        assert omp == "2"  # OMP/MKL threads = 4 cores // 2 slots
    assert times[("start", "b")] < times[("end", "a")]  # a and b ran at once
    assert times[("start", "d")] >= times[("end", "a")]  # d waited for its source (it checks too)
    spec = json.load(open(os.path.join(study, "runs", "a", "seed_0", "spec.json")))
    assert spec["cpu_threads"] == 2 and spec["overrides"][-1] == "Global.cpu_threads=2"
    md = write_report(exp, runs, study)
    assert "| d | 1 | 4 (trained by a) + precise BN on 2 batches |" in md


def test_a_finished_run_of_another_configuration_is_not_mixed_in(tmp_path, env):
    exp, runs, study = setup(tmp_path)
    Study(exp, runs[:1], study, 1, worker_cmd=fake_cmd).execute()
    raw = copy.deepcopy(EXP)
    raw["arms"]["a"]["overrides"] = ["Global.max_iters=5"]
    exp2, runs2, _ = setup(tmp_path, raw)
    with pytest.raises(ConfigError, match="runs/a/seed_0: finished with another configuration"):
        Study(exp2, runs2, study, 1, worker_cmd=fake_cmd).execute()


def test_a_run_held_by_a_live_worker_is_not_deleted(tmp_path, env):
    exp, runs, study = setup(tmp_path)
    os.makedirs(runs[0].run_dir)
    lock = hold_running_lock(runs[0].run_dir)
    try:
        with pytest.raises(ConfigError, match=f"runs/a/seed_0 is being run by another process \\(pid {os.getpid()}\\)"):
            Study(exp, runs, study, 1, worker_cmd=fake_cmd).execute()
        assert os.path.isdir(runs[0].run_dir) and events(env) == []
    finally:
        lock.close()


def test_half_written_demo_data_of_a_seed_is_cleared(tmp_path, env):
    exp, runs, study = setup(tmp_path)
    stale = os.path.join(study, "data", "seed_0", "market1501")
    os.makedirs(stale)  # a set folder the manifest does not list: a kill while writing it
    Study(exp, runs[:1], study, 1, worker_cmd=fake_cmd).execute()
    assert not os.path.exists(stale)


def only(task):
    return [f"Tasks.{t}=null" for t in ("face", "person", "vehicle", "product") if t != task]


SINGLE = {"base": EXP["base"], "seeds": [0, 1, 2],
          "arms": {"a": {"overrides": []}, "p": {"overrides": only("person")}, "s": {"overrides": only("product")}},
          "compare": {"sets": ["Market1501", "SOP"], "metrics": ["rank1", "recall@1"],
                      "pairs": [{"arms": ["a", "p"], "claim": "greater"}, {"arms": ["s", "a"], "claim": "less"}]}}


def interval(diffs):
    """(mean, half-width) of a 95% t-interval, computed here from the numbers."""
    from scipy import stats as st
    n = len(diffs)
    mean = sum(diffs) / n
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    return mean, st.t.ppf(0.975, n - 1) * sd / n ** 0.5


def test_single_task_arms_show_dashes_and_pairs_on_the_sets_both_hold(tmp_path, env):
    exp, runs, study = setup(tmp_path, SINGLE)
    Study(exp, runs, study, 1, worker_cmd=fake_cmd).execute()
    assert json.load(open(os.path.join(study, "runs", "p", "seed_0", "spec.json")))["sets"] == ["Market1501"]
    assert sorted(json.load(open(os.path.join(study, "runs", "s", "seed_2", "result.json")))["scores"]) == ["SOP"]
    md = write_report(exp, runs, study)
    table = json.load(open(os.path.join(study, "table.json")))
    arms = table["arms"]
    assert [(c["set"], c["metric"]) for c in table["cells"]] == [("Market1501", "rank1"), ("SOP", "recall@1")]
    assert (arms["a"]["sets"], arms["p"]["sets"], arms["s"]["sets"]) == (["Market1501", "SOP"], ["Market1501"], ["SOP"])
    assert arms["p"]["cells"]["SOP/recall@1"] is None and arms["s"]["cells"]["Market1501/rank1"] is None
    a_r1, p_r1 = [0.5 + 0.1 * s for s in range(3)], [0.42 + 0.07 * s for s in range(3)]
    a_sop, s_sop = [0.3 + 0.01 * s for s in range(3)], [0.27 + 0.02 * s for s in range(3)]
    p_mean, p_half = interval(p_r1)
    assert arms["p"]["cells"]["Market1501/rank1"]["mean"] == pytest.approx(p_mean)
    assert arms["p"]["cells"]["Market1501/rank1"]["half_width"] == pytest.approx(p_half)
    ap, sa = table["pairs"]
    assert ap["sets"] == ["Market1501"] and list(ap["cells"]) == ["Market1501/rank1"]
    assert sa["sets"] == ["SOP"] and list(sa["cells"]) == ["SOP/recall@1"]
    d_ap = [x - y for x, y in zip(a_r1, p_r1)]  # 0.08, 0.11, 0.14
    d_sa = [x - y for x, y in zip(s_sop, a_sop)]  # -0.03, -0.02, -0.01
    for got, diffs in ((ap["cells"]["Market1501/rank1"], d_ap), (sa["cells"]["SOP/recall@1"], d_sa)):
        mean, half = interval(diffs)
        assert got["diffs"] == pytest.approx(diffs) and got["mean"] == pytest.approx(mean)
        assert (got["low"], got["high"]) == pytest.approx((mean - half, mean + half))
    assert ap["cells"]["Market1501/rank1"]["verdict"] == "reproduced"
    assert sa["cells"]["SOP/recall@1"]["verdict"] == "not resolved"  # -0.02 ± 0.0248 holds 0
    mean, half = interval(d_ap)
    assert f"| Market1501 | rank1 | 0.6000 ± 0.2484 (n=3) | {p_mean:.4f} ± {p_half:.4f} (n=3) | — |" in md
    assert f"| SOP | recall@1 | 0.3100 ± 0.0248 (n=3) | — | 0.2900 ± 0.0497 (n=3) |" in md
    assert "—: the arm's config does not hold that test set." in md
    assert f"| Market1501 | rank1 | a - p | greater | 0: +0.0800, 1: +0.1100, 2: +0.1400 | {mean:+.4f} | " \
           f"[{mean - half:+.4f}, {mean + half:+.4f}] | reproduced |" in md
    assert "| SOP | recall@1 | a - p |" not in md and "| Market1501 | rank1 | s - a |" not in md
    assert "| SOP | recall@1 | s - a | less | 0: -0.0300, 1: -0.0200, 2: -0.0100 |" in md
    assert os.path.getsize(os.path.join(study, "plot.png")) > 10_000
    log = open(os.path.join(study, "ablate.log")).read()
    assert "arm=p seed=0 done in" in log and "(Market1501/rank1 0.4200); study ETA" in log
    env.write_text("")
    Study(exp, runs, study, 1, worker_cmd=fake_cmd).execute()  # finished single-task runs stay valid
    assert events(env) == []
    # a result without a set its config does hold is still an error
    path = os.path.join(study, "runs", "a", "seed_1", "result.json")
    res = json.load(open(path))
    del res["scores"]["SOP"]
    json.dump(res, open(path, "w"))
    with pytest.raises(ConfigError, match=r"compare.sets: runs/a/seed_1 has no scores for \['SOP'\]"):
        write_report(exp, runs, study)


@pytest.mark.slow  # a study process of its own (imports Paddle)
def test_killing_the_study_stops_its_workers_and_a_rerun_finishes_the_same_table(tmp_path, env, monkeypatch):
    exp, runs, study = setup(tmp_path)
    Study(exp, runs, study, 1, worker_cmd=fake_cmd).execute()
    whole = write_report(exp, runs, study)
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    env.write_text("")
    out = tmp_path / "killed"
    code = ("import sys; from ppufo.cli.ablate import main; "
            f"main(sys.argv[1:], worker_cmd=lambda p: [sys.executable, {FAKE!r}, p])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "exp.yaml"), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(events(env)) < 2 and time.time() < deadline:  # the first run done, the second going
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted (stopped by signal SIGTERM): stopping 1 running run(s)" in err
    assert events(env, "end") == [("a", "0")]
    started = events(env)
    time.sleep(1.0)  # the killed worker would have finished by now
    assert events(env, "end") == [("a", "0")]  # it was stopped, not left running
    assert not os.path.exists(out / "runs" / started[1][0] / f"seed_{started[1][1]}" / "result.json")
    monkeypatch.delenv("FAKE_SLEEP")
    env.write_text("")
    _, runs2, _ = setup(tmp_path, name="killed")
    Study(exp, runs2, str(out), 1, worker_cmd=fake_cmd).execute()
    assert ("a", "0") not in events(env) and len(events(env)) == 5
    assert write_report(exp, runs2, str(out)) == whole


SUPERNET = os.path.join(ROOT, "configs", "supernet_quickstart.yaml")
CHAIN = {"base": os.path.join(ROOT, "configs", "quickstart.yaml"), "seeds": [0, 1],
         "overrides": ["Tasks.person.test_sets=[{name: Market1501, root: market1501}]"],
         "arms": {"a": {"overrides": []}, "sup": {"base": SUPERNET, "init_from": "a"},
                  "sub": {"from": "sup", "search": {"task": "person", "budget": {"params": 0.8}}},
                  "scratch": {"shape_from": "sub", "compute_of": ["a", "sup"],
                              "overrides": ["Tasks.face=null", "Tasks.vehicle=null", "Tasks.product=null"]}},
         "compare": {"sets": ["Market1501"], "metrics": ["rank1"],
                     "pairs": [{"arms": ["sub", "a"], "claim": "no_worse", "margin": 0.01},
                               {"arms": ["sub", "scratch"], "claim": "greater"}]}}


def test_runs_wait_for_their_sources_even_with_free_slots(tmp_path, env, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "a=0.6,sup=0.6")
    exp, runs, study = setup(tmp_path, CHAIN)
    Study(exp, runs, study, 3, worker_cmd=fake_cmd).execute()  # the fake exits 4 if a source is unfinished
    ends = {(arm, seed): float(t) for arm, seed, t in
            (line.split()[1:4] for line in env.read_text().splitlines() if line.startswith("end"))}
    starts = {(arm, seed): float(t) for arm, seed, t in
              (line.split()[1:4] for line in env.read_text().splitlines() if line.startswith("start"))}
    for seed in "01":
        assert starts[("sup", seed)] >= ends[("a", seed)]
        assert starts[("sub", seed)] >= ends[("sup", seed)]
        assert starts[("scratch", seed)] >= max(ends[(x, seed)] for x in ("a", "sup", "sub"))
    assert starts[("a", "1")] < ends[("a", "0")]  # a free slot went to the next seed meanwhile
    md = write_report(exp, runs, study)
    # sub scores as a (the fake's BASE, SLOPE): no difference, no spread; no_worse holds, where
    # "greater" would not (the interval touches zero)
    assert ("| Market1501 | rank1 | sub - a | no_worse (margin 0.01) | 0: +0.0000, 1: +0.0000 | +0.0000 | "
            "[+0.0000, +0.0000] | reproduced |") in md
    assert "`no_worse` (margin m): `reproduced` where the interval lies above -m" in md
    table = json.loads(open(os.path.join(study, "table.json")).read())
    assert table["compute"]["a"]["train_flops_mean"] == pytest.approx(1.5e9)  # 1e9 * (1 + seed)
    assert table["compute"]["sub"]["train_flops_mean"] is None and table["pairs"][0]["margin"] == 0.01
    assert "| 0 | 5; [3, 3, 3, 2, 2];" in md and "| 2.200M | -20.0% | -50.0% | 75.0M | -25.0% | mAP 0.3100 |" in md


def test_a_failed_source_stops_the_runs_that_need_it_and_says_so(tmp_path, env, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL", "sup:0")
    setup(tmp_path, CHAIN)
    code, _ = cli(tmp_path, "--out", str(tmp_path / "study"), "--parallel", "2")
    err = capsys.readouterr().err
    assert code == 3
    assert ("runs/sup/seed_0 failed (exit code 3); not run, as they need it: runs/sub/seed_0, "
            "runs/scratch/seed_0; its log:") in err
    started = events(env)
    assert ("sub", "0") not in started and ("scratch", "0") not in started
    assert not os.path.exists(tmp_path / "study" / "runs" / "sub")  # never started, nothing half-made


def test_runs_whose_source_can_never_finish_fail_the_study_rather_than_wait(tmp_path, env):
    exp, runs, study = setup(tmp_path, CHAIN)
    lost = [r for r in runs if (r.arm, r.seed) != ("a", 0)]  # a run the others need, missing from the plan
    with pytest.raises(RunFailed) as e:
        Study(exp, lost, study, 2, worker_cmd=fake_cmd).execute()
    assert str(e.value).startswith("runs wait for runs that are neither finished nor planned: "
                                   "runs/sup/seed_0 (needs ['runs/a/seed_0']), runs/sub/seed_0 (needs ['runs/sup/seed_0'])")
    assert sorted(events(env)) == [("a", "1"), ("scratch", "1"), ("sub", "1"), ("sup", "1")]
