"""The study's report from its finished runs: <study>/table.md, table.json and plot.png.

Per compared (set, metric) cell: each arm's mean over seeds with its 95% t-interval ("—" in
table.md, null in table.json, for a set the arm's config does not hold), each pair's per-seed
differences a - b with their mean, interval and verdict (stats.py), on the sets both arms hold
only (the pair's "sets"); beside them the compute per arm (steps, images seen per task, training
FLOPs, mean wall time per run), the subnets the search arms chose (parameters and FLOPs against
the All-in-One ViT and the largest path), and the seeds and commits the runs were made at. Built
from result.json files only, so it is the same whether the runs finished in one go or over
several resumed sessions.
"""
import os
from collections import Counter

from ..utils.errors import ConfigError
from . import stats
from .results import read_result, write_json_atomic


def cell_key(set_name, metric):
    return f"{set_name}/{metric}"


def select_cells(exp, scores, where="a run", sets=None):
    """[(set, metric)] compared, from one run's ``scores`` ({set: {key: number}}) on ``sets``: the
    compared sets the run's config holds (``Run.sets``; default every compared set), each of which
    it must have scores for. A metric list applies to every set that has the key; each set must get
    one, and each metric be found (decided here only for a run holding every compared set;
    metrics_found checks that over several runs)."""
    sets = list(exp.sets) if sets is None else [s for s in exp.sets if s in sets]
    missing = [s for s in sets if s not in scores]
    if missing:
        raise ConfigError(f"{exp.path}: compare.sets: {where} has no scores for {missing} (it scored "
                          f"{sorted(scores)}); the compared sets changed after it ran: rerun it in "
                          f"another --out, or delete its folder")
    if isinstance(exp.metrics, dict):
        bad = {s: [m for m in exp.metrics[s] if m not in scores[s]] for s in sets}
        bad = {s: ms for s, ms in bad.items() if ms}
        if bad:
            s = next(iter(bad))
            raise ConfigError(f"{exp.path}: compare.metrics.{s}: {bad[s]} not in the result of set {s}; "
                              f"its keys: {sorted(scores[s])}")
        return [(s, m) for s in sets for m in exp.metrics[s]]
    cells = [(s, m) for s in sets for m in exp.metrics if m in scores[s]]
    if len(sets) == len(exp.sets):
        metrics_found(exp, [scores])
    bare = [s for s in sets if not any(s == c[0] for c in cells)]
    if bare:
        _metrics_error(exp, f"set(s) {bare} have none of the metrics", scores)
    return cells


def _metrics_error(exp, what, scores):
    keys = {s: sorted(scores[s]) for s in exp.sets if s in scores}
    raise ConfigError(f"{exp.path}: compare.metrics: {what}; the sets' result keys: {keys}")


def metrics_found(exp, scores_list):
    """A metric list's every key must be in some compared set's result: checked over the runs'
    ``scores`` once they cover every compared set (the runs of single-task arms each hold a part)."""
    if isinstance(exp.metrics, dict):
        return
    keys = {}
    for scores in scores_list:
        for s in exp.sets:
            if s in scores:
                keys.setdefault(s, scores[s])
    if len(keys) < len(exp.sets):
        return
    unused = [m for m in exp.metrics if not any(m in keys[s] for s in exp.sets)]
    if unused:
        _metrics_error(exp, f"metric(s) {unused} are in no compared set's result", keys)


def study_cells(exp, runs, results):
    """[(set, metric)] of the study, in compare.sets and compare.metrics order: those of the
    finished runs (each checked with select_cells on the sets its config holds). With a metric
    list, a set no finished run holds has no cells yet."""
    per_run = {r.index: select_cells(exp, results[r.index]["scores"], where=r.rel_dir, sets=r.sets)
               for r in runs if r.index in results}
    metrics_found(exp, [results[i]["scores"] for i in per_run])
    found = {c for cells in per_run.values() for c in cells}
    cells = [(s, m) for s in exp.sets
             for m in (exp.metrics[s] if isinstance(exp.metrics, dict) else exp.metrics) if (s, m) in found]
    for r in runs:  # a set's keys are the same in every run holding it
        if r.index in per_run:
            lacking = [c for c in cells if c[0] in r.sets and c not in per_run[r.index]]
            if lacking:
                s, m = lacking[0]
                raise ConfigError(f"{exp.path}: compare.metrics: {r.rel_dir} has no {m} for set {s}, "
                                  f"which other runs have; its keys: {sorted(results[r.index]['scores'][s])}")
    return cells


def finished_results(runs):
    """{run index: result} of the runs that have a result.json."""
    out = {}
    for r in runs:
        res = read_result(r.run_dir)
        if res is not None:
            out[r.index] = res
    return out


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def wall_seconds(result):
    """Training + post-step + scoring of one run (not the demo data writing nor process start)."""
    s = result["seconds"]
    return s.get("train", 0.0) + s.get("post_step", 0.0) + s.get("eval", 0.0)


def build_table(exp, runs, results, study_dir):
    """The report as a JSON-ready dict (see the module doc); ``results`` from finished_results."""
    by_arm = {a: [r for r in runs if r.arm == a] for a in exp.arms}
    if not any(r.index in results for r in runs):
        raise ConfigError(f"{study_dir}: no finished run to report on")
    cells = study_cells(exp, runs, results)  # every result must hold the compared sets of its config
    held = {a: list(rs[0].sets) for a, rs in by_arm.items()}  # an arm's runs hold the same sets
    values = {a: {cell_key(*c): {r.seed: results[r.index]["scores"][c[0]][c[1]]
                                 for r in rs if r.index in results} for c in cells if c[0] in held[a]}
              for a, rs in by_arm.items()}
    arms = {}
    for a, rs in by_arm.items():
        arm = exp.arms[a]
        arm_cells = {}
        for c in cells:
            k = cell_key(*c)
            v = values[a].get(k)
            # a set the arm's config does not hold: None (no numbers, not an error)
            arm_cells[k] = None if v is None else dict(stats.summarize(v[s] for s in sorted(v)),
                                                       values={str(s): v[s] for s in sorted(v)})
        arms[a] = {"kind": arm.kind, "source": arm.source, "sets": held[a], "cells": arm_cells}
    pairs = []
    for p in exp.pairs:
        shared = [s for s in exp.sets if s in held[p.a] and s in held[p.b]]
        pc = {}
        for c in cells:
            if c[0] not in shared:  # only the sets both arms hold
                continue
            k = cell_key(*c)
            d = stats.paired(values[p.a][k], values[p.b][k], p.claim, margin=p.margin)
            pc[k] = dict(d, seeds=[str(s) for s in d["seeds"]])
        pairs.append({"a": p.a, "b": p.b, "claim": p.claim, "margin": p.margin, "note": p.note, "sets": shared,
                      "cells": pc})
    compute = {}
    for a, rs in by_arm.items():
        done = [results[r.index] for r in rs if r.index in results]
        tasks = list(done[0]["images_per_task"]) if done else []
        flops = [d.get("train_flops") for d in done if d["kind"] == "train"]
        compute[a] = {"runs": len(done), "steps": sorted({d["steps"] for d in done}),
                      "images_per_task": {t: _mean([d["images_per_task"][t] for d in done]) for t in tasks},
                      "train_flops_mean": None if None in flops else _mean(flops),
                      "wall_seconds_mean": _mean([wall_seconds(d) for d in done]),
                      "source": exp.arms[a].source, "precise_bn": exp.arms[a].precise_bn,
                      "search": exp.arms[a].search}
    subnets = {a: {str(r.seed): results[r.index]["subnet"] for r in rs if r.index in results}
               for a, rs in by_arm.items() if exp.arms[a].search is not None}
    commits = Counter(results[i].get("commit", "unknown") for i in sorted(results))
    return {"name": exp.name, "experiment": exp.path, "base": exp.base, "description": exp.description,
            "seeds": list(exp.seeds), "commits": dict(sorted(commits.items())), "level": stats.LEVEL,
            "runs": {"planned": len(runs), "finished": len(results),
                     "missing": [r.rel_dir for r in runs if r.index not in results]},
            "cells": [{"set": s, "metric": m} for s, m in cells],
            "arms": arms, "pairs": pairs, "compute": compute, "subnets": subnets}


def _num(x, signed=False):
    return "-" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")


def _duration(seconds):
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


NOT_HELD = "—"  # an arm's cell of a test set its config does not hold


def _arm_cell(c):
    if c is None:
        return NOT_HELD
    if c["n"] == 0:
        return "no runs"
    if c["n"] == 1:
        return f"{_num(c['mean'])} (n=1, no interval)"
    return f"{_num(c['mean'])} ± {c['half_width']:.4f} (n={c['n']})"


def _rel(path):
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def render_markdown(table):
    """table.md: what was run, the arms, the paired differences, the compute per arm."""
    pct = int(round(table["level"] * 100))
    commits = ", ".join(c if n == table["runs"]["finished"] else f"{c} ({n} runs)"
                        for c, n in table["commits"].items())
    runs = table["runs"]
    lines = [f"## Ablation `{table['name']}`", ""]
    if table["description"]:
        lines += [table["description"], ""]
    lines += [f"Experiment `{_rel(table['experiment'])}`, base config `{_rel(table['base'])}`; "
              f"seeds {', '.join(map(str, table['seeds']))}; commit {commits}. "
              f"Runs finished: {runs['finished']} of {runs['planned']}"
              + (f" (missing: {', '.join(runs['missing'])})" if runs["missing"] else "") + ".",
              f"Every run is scored once, at its final iteration. Intervals: {pct}% t-intervals over seeds, "
              f"mean ± t(0.975, n-1)·s/√n; n=1 gives none.", ""]
    arms = list(table["arms"])
    lines += [f"### Arms: mean ± {pct}% half-width", "",
              "| set | metric | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for c in table["cells"]:
        k = cell_key(c["set"], c["metric"])
        lines.append(f"| {c['set']} | {c['metric']} | "
                     + " | ".join(_arm_cell(table["arms"][a]["cells"][k]) for a in arms) + " |")
    if any(cell is None for a in arms for cell in table["arms"][a]["cells"].values()):
        lines += ["", f"{NOT_HELD}: the arm's config does not hold that test set."]
    if table["pairs"]:
        lines += ["", "### Paired differences a - b (seeds and test sets both arms have)", "",
                  f"| set | metric | a - b | claim | per seed | mean | {pct}% interval | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in table["pairs"]:
            for c in table["cells"]:
                d = p["cells"].get(cell_key(c["set"], c["metric"]))
                if d is None:  # a set one of the two arms does not hold
                    continue
                per_seed = ", ".join(f"{s}: {v:+.4f}" for s, v in zip(d["seeds"], d["diffs"])) or "-"
                interval = (f"[{d['low']:+.4f}, {d['high']:+.4f}]" if d["low"] is not None
                            else f"none (n={d['n']})")
                lines.append(f"| {c['set']} | {c['metric']} | {p['a']} - {p['b']} | {_claim(p)} | "
                             f"{per_seed} | {_num(d['mean'], True)} | {interval} | {d['verdict']} |")
        notes = [f"- {p['a']} - {p['b']} ({_claim(p)}): {p['note']}" for p in table["pairs"] if p["note"]]
        if notes:
            lines += ["", "Claims:", *notes]
        lines += ["", "Verdict: `reproduced` only where the interval excludes zero in the claimed "
                      "direction; `opposite` where it excludes zero the other way; else `not resolved`."
                  + (" `no_worse` (margin m): `reproduced` where the interval lies above -m, `opposite` "
                     "where it lies below -m." if any(p["claim"] == "no_worse" for p in table["pairs"]) else "")]
    lines += ["", "### Compute per arm", "",
              "| arm | runs | steps | images seen per task | training FLOPs (backbone, mean) "
              "| mean wall time per run (train or post-step, + score) |",
              "|---|---|---|---|---|---|"]
    for a, c in table["compute"].items():
        steps = "/".join(map(str, c["steps"])) or "-"
        if c["precise_bn"]:
            steps += f" (trained by {c['source']}) + precise BN on {c['precise_bn']['num_batches']} batches"
        elif c["search"] is not None:
            steps += f" (trained by {c['source']}) + subnet search, {c['search']['task']} under {c['search']['budget']}"
        images = ", ".join(f"{t} {v:g}" for t, v in c["images_per_task"].items()) or "-"
        flops = ("-" if c["source"] else "not counted" if c["train_flops_mean"] is None
                 else f"{c['train_flops_mean']:.4g}")
        lines.append(f"| {a} | {c['runs']} | {steps} | {images} | {flops} | {_duration(c['wall_seconds_mean'])} |")
    for a, per_seed in table.get("subnets", {}).items():
        lines += ["", f"### Subnets `{a}` chose (backbone; vs: subnet / reference - 1)", "",
                  "| seed | depth, heads, FFN paths, ratios | params | vs All-in-One | vs largest path "
                  "| FLOPs | vs All-in-One | search's validation score |", "|---|---|---|---|---|---|---|---|"]
        for seed, sub in per_seed.items():
            n, r, f = sub["subnet"], sub["reduction"]["params"], sub["reduction"]["flops"]
            lines.append(f"| {seed} | {n['depth']}; {n['heads']}; {n['paths']}; {n['ratios']} | "
                         f"{r['subnet'] / 1e6:.3f}M | {r['vs_allinone']:+.1%} | {r['vs_largest']:+.1%} | "
                         f"{f['subnet'] / 1e6:.1f}M | {f['vs_allinone']:+.1%} | "
                         f"{sub['metric']} {sub['measured']['accuracy']:.4f} |")
        if per_seed:
            r = next(iter(per_seed.values()))["reduction"]["params"]
            lines += ["", f"All-in-One ViT {r['allinone'] / 1e6:.3f}M params, largest path {r['largest'] / 1e6:.3f}M."]
    return "\n".join(lines) + "\n"


def _claim(p):
    return f"no_worse (margin {p['margin']:g})" if p["claim"] == "no_worse" else p["claim"]


def plot(table, path):
    """plot.png: per cell, each arm's mean with its interval (and the per-seed values), and each
    pair's per-seed differences with their mean, interval and a zero line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells, arms, pairs = table["cells"], list(table["arms"]), table["pairs"]
    cols = 2 if pairs else 1
    fig, axes = plt.subplots(len(cells), cols, figsize=(5.5 * cols, 3.2 * len(cells)), squeeze=False)
    for row, c in enumerate(cells):
        k = cell_key(c["set"], c["metric"])
        ax = axes[row][0]
        for i, a in enumerate(arms):
            s = table["arms"][a]["cells"][k]
            if s is None or s["mean"] is None:  # a set the arm does not hold, or no runs
                continue
            vals = list(s["values"].values())
            ax.scatter([i] * len(vals), vals, s=12, color="0.6", zorder=2)
            ax.errorbar([i], [s["mean"]], yerr=None if s["half_width"] is None else [[s["half_width"]]] * 2,
                        fmt="o", color="C0", capsize=5, zorder=3)
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=25, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_xlim(-0.5, len(arms) - 0.5)
        ax.set_title(f"{c['set']} {c['metric']}: arms (mean, {int(table['level'] * 100)}% CI)", fontsize=9)
        if pairs:
            ax = axes[row][1]
            for i, p in enumerate(pairs):
                d = p["cells"].get(k)
                if d is None:  # a set one of the two arms does not hold
                    continue
                ax.scatter([i] * len(d["diffs"]), d["diffs"], s=12, color="0.6", zorder=2)
                if d["mean"] is not None:
                    err = None if d["half_width"] is None else [[d["half_width"]]] * 2
                    color = {"reproduced": "C2", "opposite": "C3"}.get(d["verdict"], "C0")
                    ax.errorbar([i], [d["mean"]], yerr=err, fmt="o", color=color, capsize=5, zorder=3)
            ax.axhline(0.0, color="k", lw=0.8)
            for i, p in enumerate(pairs):  # a no_worse claim's bound: -margin under its pair
                if p["claim"] == "no_worse" and k in p["cells"]:
                    ax.hlines(-p["margin"], i - 0.3, i + 0.3, colors="C3", linestyles="dashed", lw=1)
            ax.set_xticks(range(len(pairs)))
            ax.set_xticklabels([f"{p['a']}\n- {p['b']}\n({_claim(p)})" for p in pairs], rotation=25,
                               ha="right", rotation_mode="anchor", fontsize=7)
            ax.set_xlim(-0.5, len(pairs) - 0.5)
            ax.set_title(f"{c['set']} {c['metric']}: paired differences", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(exp, runs, study_dir):
    """Write table.md, table.json and plot.png into ``study_dir``; returns the markdown."""
    table = build_table(exp, runs, finished_results(runs), study_dir)
    md = render_markdown(table)
    os.makedirs(study_dir, exist_ok=True)
    write_json_atomic(os.path.join(study_dir, "table.json"), table)
    tmp = os.path.join(study_dir, f"table.md.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(md)
    os.replace(tmp, os.path.join(study_dir, "table.md"))
    plot(table, os.path.join(study_dir, "plot.png"))
    return md
