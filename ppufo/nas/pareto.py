"""Pareto front of (cost, accuracy) points and its plot (matplotlib, Agg backend)."""
import numpy as np

COST_LABELS = {"latency_ms": "latency (ms)", "params": "backbone parameters (M)", "flops": "FLOPs per image (G)"}
COST_SCALE = {"latency_ms": 1.0, "params": 1e-6, "flops": 1e-9}


def pareto_front(points):
    """Indices of the points no other point beats on both lower cost and higher accuracy,
    ordered by cost."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    order = np.lexsort((-pts[:, 1], pts[:, 0]))  # by cost, then best accuracy first
    front, best = [], -np.inf
    for i in order:
        if pts[i, 1] > best:
            front.append(int(i))
            best = pts[i, 1]
    return front


# how each precision's candidates are drawn: quantised ones are marked (Search.int8_candidates or an int8 chip)
STYLES = {"float": {"light": "#9ecae1", "dark": "#08519c", "marker": "o", "what": "float"},
          "int8": {"light": "#fdd0a2", "dark": "#d94801", "marker": "^",
                   "what": "int8 (accuracy simulated, latency from the int8 table)"}}


def plot_pareto(path, result, budget_type, budget, metric, title):
    """Measured points, predicted candidates, the measured front, the budget and the choice; with
    "by_precision" (configured.run_search) each precision's points in its own style, one front over all."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    k = COST_SCALE[budget_type]
    groups = result.get("by_precision") or {result.get("precision", "float"): result}
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    every = []
    for precision, r in groups.items():
        st = STYLES[precision]
        pred = np.asarray(r["points"]["predicted"], np.float64).reshape(-1, 2)
        meas = np.asarray(r["points"]["measured"], np.float64).reshape(-1, 2)
        ax.scatter(pred[:, 0] * k, pred[:, 1], s=4, c=st["light"], marker=st["marker"], alpha=0.5,
                   label=f"{st['what']}: predicted ({len(pred)} candidates)")
        ax.scatter(meas[:, 0] * k, meas[:, 1], s=18, c=st["dark"], marker=st["marker"],
                   label=f"{st['what']}: measured ({len(meas)})")
        every.append(meas)
    meas = np.concatenate(every)
    front = meas[pareto_front(meas)]
    ax.step(front[:, 0] * k, front[:, 1], where="post", c="black", lw=1, label="measured Pareto front")
    ax.axvline(budget * k, c="grey", ls="--", lw=1, label=f"budget {budget * k:g}")
    m = result["measured"]
    ax.scatter([m[budget_type] * k], [m["accuracy"]], s=160, marker="*", c="#e6550d", zorder=5,
               label=f"chosen ({result.get('precision', 'float')}): {metric} {m['accuracy']:.4f} at "
                     f"{m[budget_type] * k:.4g}")
    ax.set_xlabel(COST_LABELS[budget_type])
    ax.set_ylabel(f"{metric} (validation)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
