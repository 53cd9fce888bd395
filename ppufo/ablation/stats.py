"""Statistics of an ablation study (numpy and scipy only, no Paddle).

Per arm and (set, metric): the mean over seeds, the sample standard deviation (ddof=1), n, and
the 95% t-interval mean ± t(0.975, n-1)·s/√n. Per pair of arms [a, b]: the per-seed differences
a - b over the seeds both arms have, their mean and 95% t-interval, and a verdict on the claimed
direction: "reproduced" only where the interval excludes zero in that direction, "opposite"
where it excludes zero the other way, "not resolved" otherwise (also when n < 2, where there is
no interval: one seed says nothing about seed-to-seed spread). The claim "no_worse" with a
``margin`` (a non-inferiority claim, in the metric's units: 0.01 = 1 point) is reproduced where
the interval lies above -margin, opposite where it lies below it.
"""
import math

import numpy as np
from scipy import stats as _st

LEVEL = 0.95
DIRECTIONS = ("greater", "less", "no_worse")
REPRODUCED, OPPOSITE, NOT_RESOLVED = "reproduced", "opposite", "not resolved"


def t_quantile(n, level=LEVEL):
    """t_{(1+level)/2, n-1}: the two-sided critical value for n samples (n >= 2)."""
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 samples, got {n}")
    return float(_st.t.ppf(0.5 + level / 2, n - 1))


def summarize(values, level=LEVEL):
    """{"n", "mean", "std", "half_width", "low", "high"} of ``values``; std, half_width, low and
    high are None for n = 1 (no spread to estimate). n = 0 gives every number None."""
    x = np.asarray(list(values), dtype=np.float64)
    n = int(x.size)
    out = {"n": n, "mean": None, "std": None, "half_width": None, "low": None, "high": None}
    if n == 0:
        return out
    out["mean"] = float(x.mean())
    if n >= 2:
        s = float(x.std(ddof=1))
        h = t_quantile(n, level) * s / math.sqrt(n)
        out.update(std=s, half_width=h, low=out["mean"] - h, high=out["mean"] + h)
    return out


def verdict(low, high, direction, margin=0.0):
    """The claim "a - b is ``direction`` than 0" against the interval [low, high] of a - b;
    "no_worse": a - b > -``margin`` (a is at most ``margin`` below b)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}; expected one of {DIRECTIONS}")
    if margin < 0:
        raise ValueError(f"margin {margin!r}; expected >= 0")
    if low is None or high is None:
        return NOT_RESOLVED
    if direction == "no_worse":
        if low > -margin:
            return REPRODUCED
        return OPPOSITE if high < -margin else NOT_RESOLVED
    if low > 0:
        return REPRODUCED if direction == "greater" else OPPOSITE
    if high < 0:
        return REPRODUCED if direction == "less" else OPPOSITE
    return NOT_RESOLVED


def paired(a, b, direction, level=LEVEL, margin=0.0):
    """Paired differences of two arms' per-seed values ``a``, ``b`` ({seed: value}): only the
    seeds both have, in increasing order. Returns summarize() of the differences plus "seeds",
    "diffs" (a - b per seed) and "verdict" (``margin``: of a "no_worse" claim)."""
    seeds = sorted(set(a) & set(b))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    out = summarize(diffs, level)
    out.update(seeds=seeds, diffs=diffs, verdict=verdict(out["low"], out["high"], direction, margin))
    return out
