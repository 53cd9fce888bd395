"""The report of an evaluation: the log lines and eval_<tag>.json of an Evaluator summary.

Evaluator.evaluate only computes; whoever wants a report (tools/eval.py, the trainer's
evaluations, the ablation worker, extraction's side-by-side) calls report_results. A search
measurement does not: it needs the score, not hundreds of tables and files.
"""
import json
import os

from ..metric.protocol import PROTOCOLS
from ..utils.dist import process_group
from ..utils.logger import get_logger


def report_results(summary, out_dir, log=None):
    """Write ``summary`` to <out_dir>/eval_<tag>.json (rank 0; every rank holds the same
    summary), then log the no-match warnings, the per-set table, the mean score and, last, the
    paper-order row. Returns the JSON path (None on other ranks)."""
    log = log or get_logger()
    path = None
    if process_group()[0] == 0:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"eval_{summary['tag']}.json")
        with open(path, "w") as fh:
            json.dump(summary, fh, indent=1, default=float)
    for w in no_match_warnings(summary):
        log.warning(w)
    log.info(f"[Eval][{summary['tag']}]\n" + format_table(summary["sets"])
             + (f"\nmean score: {summary['score']:.4f}" if summary["score"] is not None else "")
             + "\npaper table (UFO column order; ReID rank1/mAP, faces accuracy, SOP R@1):\n"
             + format_paper_row(summary["paper_row"]))
    return path


def no_match_warnings(summary):
    """One line per set whose queries had no match to find (left out of its scores), with its
    protocol's reason."""
    return [f"{r['task']}/{r['set']}: {r['num_queries_without_match']} of {r['num_queries']} queries have "
            f"no match to find ({PROTOCOLS.get(r['protocol']).no_match}); left out of the scores"
            for r in summary["sets"] if r.get("num_queries_without_match")]


def format_table(results):
    rows = [("task", "test set", "result", "details")]
    for r in results:
        details = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in r.items()
                            if k not in ("task", "set", "dataset", "protocol", "headline", "score",
                                         "seconds"))
        rows.append((r["task"], r["set"], r["headline"], details))
    widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3]
                     for row in rows)


def format_paper_row(row):
    """Two lines of a markdown table: the column names and the cells, padded to align."""
    widths = [max(len(k), len(v)) for k, v in row.items()]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
                     for cells in (list(row), list(row.values())))
