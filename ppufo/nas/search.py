"""Budgeted subnet search per chip: measure a sample, fit GP-NAS, rank, verify, choose.

1. Sample Search.num_samples distinct subnets (the largest and smallest first, so the fit spans
   the space) and measure them: accuracy per task, and latency when the budget is in ms.
2. Fit one GP-NAS predictor for each task's accuracy (on Search.features) and one for the chip's
   latency (on the position-free summary; a latency table is itself an exact model and is used
   as is; params and FLOPs are computed exactly).
3. Predict Search.num_candidates random subnets (the whole space if it is that small), keep
   those predicted within budget, verify the Search.num_verify best by measuring them (a measured
   latency timed together with samples near the budget, and put on the samples' level). While a
   round finds none within budget that beats every subnet measured before, refit on all measured
   and verify again, up to Search.verify_rounds rounds.
4. Choose, per task, the most accurate MEASURED subnet whose MEASURED cost is within budget.
"""
import time

import numpy as np

from ..utils.errors import ConfigError
from .budget import Budget
from .cache import details_of, measure, record, subnet_key, uncached
from .predictor import GPNASPredictor, quality, subnet_features
from .runtime_choice import fastest

BUDGETS = ("latency_ms", "params", "flops")
REFERENCES = 8  # measured samples timed again with the verified candidates, as level references
# every block of a ViT sees the same tokens, so latency does not depend on where a choice sits
LATENCY_FEATURES = "summary"


def sample_subnets(space, n, rng, extremes=True):
    """``n`` distinct subnets; the largest and smallest first when ``extremes``."""
    out, seen = [], set()
    pool = [space.largest(), space.smallest()] if extremes else []
    n = min(n, space.size())
    while len(out) < n:
        s = pool.pop(0) if pool else space.sample(rng)
        k = subnet_key(space, s)
        if k not in seen:
            seen.add(k)
            out.append(s)
    return out


class Measure:
    """A measurement function with its cache and a label for progress bars."""

    def __init__(self, fn, cache, label):
        self.fn, self.cache, self.label = fn, cache, label

    def __call__(self, space, subnets):
        return measure(space, subnets, self.fn, self.cache, self.label)

    def against(self, space, subnets, references, reference_values):
        """(values of ``subnets``, level) on the scale of ``reference_values``, earlier measurements
        of ``references``. A timing's level drifts between groups on a shared machine (the whole
        group 1.5x slower minutes later), while ratios within one interleaved group hold. So
        the uncached subnets are timed in one group with the references, and scaled by the median
        ratio reference_value / reference now. Level: {"median", "min", "max"} of those ratios, or
        None when nothing new was measured or ``fn`` does not time groups (a deterministic
        measurement needs no reference)."""
        keys, todo = uncached(space, subnets, self.cache)
        many = getattr(self.fn, "measure_many", None)
        if not todo or many is None or not len(references):
            return self(space, subnets), None
        refs = list(references)
        t = time.time()
        now = np.asarray(many([s for _, s in todo] + refs), np.float64)
        ratios = np.asarray(reference_values, np.float64) / now[len(todo):]
        level = {"median": float(np.median(ratios)), "min": float(ratios.min()), "max": float(ratios.max())}
        record(self.cache, todo, now[:len(todo)] * level["median"], (time.time() - t) / len(now), self.label,
               details_of(self.fn, todo))
        return np.array([self.cache.get(k) for k in keys], np.float64), level


class BudgetedSearch:
    """accuracy: {task: Measure}; latency: a Measure (needed for a latency_ms budget), or an exact
    callable (a latency table) when ``latency_exact``. ``budget``: a number in ``budget_type``'s
    units, or a resolved Budget (ppufo.nas.budget), which the results carry. ``runtime_of``: on a
    runtime choice, subnet -> {runtime chip: ms} of a measured subnet (runtime_choice.runtime_lookup;
    the latency is the fastest's), reported for the verified subnets and the chosen one."""

    def __init__(self, space, accuracy, budget_type, budget, latency=None, latency_exact=False,
                 num_samples=40, num_candidates=5000, num_verify=5, seed=0, features="both", log=print,
                 verify_rounds=3, runtime_of=None, required=True):
        spec = budget if isinstance(budget, Budget) else None
        budget = spec.value if spec else budget
        if budget_type not in BUDGETS:
            raise ConfigError(f"Search.budget_type={budget_type!r}; expected one of {list(BUDGETS)}")
        if not budget or budget <= 0:
            raise ConfigError(f"Search.budget={budget!r}: expected a positive number "
                              f"({'ms' if budget_type == 'latency_ms' else budget_type})")
        if budget_type == "latency_ms" and latency is None:
            raise ConfigError("Search.budget_type=latency_ms needs a latency source (Search.latency)")
        if num_samples < 4 or num_verify < 1 or num_candidates < 1 or verify_rounds < 1:
            raise ConfigError(f"Search: num_samples {num_samples} (>= 4), num_verify {num_verify} (>= 1), "
                              f"num_candidates {num_candidates} (>= 1), verify_rounds {verify_rounds} (>= 1)")
        self.space, self.accuracy, self.latency, self.latency_exact = space, accuracy, latency, latency_exact
        self.budget_type, self.budget, self.features = budget_type, float(budget), features
        self.spec = spec or Budget(budget_type, self.budget)
        if self.spec.type != budget_type:
            raise ConfigError(f"Search.budget is a {self.spec.type} budget; budget_type is {budget_type}")
        self.num_samples, self.num_candidates, self.num_verify = num_samples, num_candidates, num_verify
        self.verify_rounds, self.runtime_of, self.required = verify_rounds, runtime_of, required
        self.rng, self.log = np.random.RandomState(seed), log

    # -- costs ---------------------------------------------------------------------------------
    def measured_cost(self, subnets):
        if self.budget_type == "params":
            return np.array([self.space.params(s) for s in subnets], np.float64)
        if self.budget_type == "flops":
            return np.array([self.space.flops(s) for s in subnets], np.float64)
        if self.latency_exact:
            return np.array([self.latency(s) for s in subnets], np.float64)
        return self.latency(self.space, subnets)

    def verify_cost(self, task, verify, samples, sample_cost):
        """(measured cost of ``verify``, timing level): a measured latency is timed together with
        the REFERENCES samples nearest the budget and put on the samples' scale (Measure.against),
        which the predictions and the samples it competes with are on."""
        if not verify:
            return np.zeros(0), None
        if self.budget_type != "latency_ms" or self.latency_exact:
            return self.measured_cost(verify), None
        near = np.argsort(np.abs(np.asarray(sample_cost) - self.budget), kind="stable")[:REFERENCES]
        cost, level = self.latency.against(self.space, verify, [samples[i] for i in near], np.asarray(sample_cost)[near])
        if level is not None:
            self.log(f"[{task}] verified candidates timed with {len(near)} samples as references, which took "
                     f"x{1 / level['median']:.3f} their first times (median; x{1 / level['max']:.3f}-"
                     f"x{1 / level['min']:.3f}): the verified times are scaled by x{level['median']:.3f} "
                     f"onto the samples' scale")
        return cost, level

    def runtime(self, subnet):
        """{"runtime": fastest runtime, its backend, each runtime's ms} on a runtime choice, else {}."""
        return {"runtime": fastest(self.runtime_of(subnet))} if self.runtime_of else {}

    def fit_cost_model(self, subnets, cost):
        """A GP-NAS latency predictor for a measured latency budget; None where cost is exact."""
        if self.budget_type == "latency_ms" and not self.latency_exact:
            return GPNASPredictor().fit(self.X(subnets, LATENCY_FEATURES), cost)
        return None

    def X(self, subnets, kind=None):
        return subnet_features(self.space, subnets, kind or self.features)

    # -- the search -----------------------------------------------------------------------------
    def run(self):
        sp = self.space
        samples = sample_subnets(sp, self.num_samples, self.rng)
        cost = self.measured_cost(samples)
        acc = {t: m(sp, samples) for t, m in self.accuracy.items()}
        predictors = {t: GPNASPredictor().fit(self.X(samples), a) for t, a in acc.items()}
        cost_model = self.fit_cost_model(samples, cost)
        if sp.size() <= self.num_candidates:
            candidates = sample_subnets(sp, sp.size(), self.rng, extremes=False)
        else:
            candidates = sample_subnets(sp, self.num_candidates, self.rng)
        Xc = self.X(candidates)
        pred_cost = (cost_model.predict(self.X(candidates, LATENCY_FEATURES)) if cost_model is not None
                     else self.measured_cost(candidates))
        results = {}
        for task, predictor in predictors.items():
            pred_acc = predictor.predict(Xc)
            results[task] = self._choose(task, samples, acc[task], cost, candidates, pred_acc, pred_cost,
                                         predictor, cost_model)
        return results

    def _choose(self, task, samples, sample_acc, sample_cost, candidates, pred_acc, pred_cost, predictor, cost_model):
        """Verify in rounds: measure the Search.num_verify candidates predicted most accurate within
        budget. While none of a round is within budget and more accurate than every subnet measured
        before (the top of a ranking gathers where the predictors err: cost low, accuracy high),
        refit both predictors on everything measured and verify the next best."""
        sp = self.space
        keys = [subnet_key(sp, s) for s in candidates]
        Xc, Xc_cost = self.X(candidates), (self.X(candidates, LATENCY_FEATURES) if cost_model is not None else None)
        pool = list(zip(samples, sample_acc, sample_cost))
        verified, levels = [], []
        for rnd in range(1, self.verify_rounds + 1):
            measured = {subnet_key(sp, s) for s, _, _ in pool}
            order = [i for i in np.argsort(-pred_acc, kind="stable")
                     if pred_cost[i] <= self.budget and keys[i] not in measured][:self.num_verify]
            verify = [candidates[i] for i in order]
            self.log(f"[{task}] round {rnd}: {int(np.sum(pred_cost <= self.budget))} of {len(candidates)} candidates "
                     f"predicted within {self.budget_type} <= {self.budget:g}; verifying the {len(verify)} predicted best")
            if not verify:
                break
            v_acc = self.accuracy[task](sp, verify)
            v_cost, level = self.verify_cost(task, verify, [s for s, _, _ in pool], [c for _, _, c in pool])
            levels.append(level)
            for s, i, a, c in zip(verify, order, v_acc, v_cost):
                self.log(f"[{task}] verified: accuracy {a:.4f} (predicted {pred_acc[i]:.4f}), {self.budget_type} "
                         f"{c:.4g} (predicted {pred_cost[i]:.4g})")
                verified.append({"subnet": s.to_dict(), "round": rnd, "predicted_accuracy": float(pred_acc[i]),
                                 "accuracy": float(a), self.budget_type: float(c),
                                 f"predicted_{self.budget_type}": float(pred_cost[i]), **self.runtime(s)})
            best_so_far = max([a for _, a, c in pool if c <= self.budget], default=-np.inf)
            pool += list(zip(verify, v_acc, v_cost))
            if np.any((v_cost <= self.budget) & (v_acc > best_so_far)) or rnd == self.verify_rounds:
                break
            pool_s, pool_a, pool_c = map(list, zip(*pool))
            predictor = GPNASPredictor().fit(self.X(pool_s), pool_a)
            pred_acc = predictor.predict(Xc)
            if cost_model is not None:
                cost_model = self.fit_cost_model(pool_s, pool_c)
                pred_cost = cost_model.predict(Xc_cost)
        points = {"measured": [(float(c), float(a)) for _, a, c in pool],
                  "predicted": [(float(c), float(a)) for c, a in zip(pred_cost, pred_acc)]}
        within = [(s, a, c) for s, a, c in pool if c <= self.budget]
        if not within:
            lowest = min(c for _, _, c in pool)
            if not self.required:
                return {"task": task, "subnet": None, "budget": self.spec, "cheapest": float(lowest),
                        "verified": verified, "points": points}
            raise ConfigError(f"Search.budget: no measured subnet of {task} is within "
                              f"{self.spec.text()} (the cheapest measured costs {lowest:.4g}); raise the budget")
        best = max(within, key=lambda r: r[1])
        if cost_model is not None:
            best_cost = float(cost_model.predict(self.X([best[0]], LATENCY_FEATURES))[0])
        else:
            best_cost = float(self.measured_cost([best[0]])[0])
        v_pred, v_acc = [v["predicted_accuracy"] for v in verified], [v["accuracy"] for v in verified]
        return {
            "task": task, "subnet": best[0], "budget": self.spec, **self.runtime(best[0]),
            "predicted": {"accuracy": float(predictor.predict(self.X([best[0]]))[0]), self.budget_type: best_cost},
            "measured": {"accuracy": float(best[1]), self.budget_type: float(best[2])},
            "verified": verified,
            # the verified are the top of the ranking, unseen by the fit (of their round): a held-out check
            "verify_quality": quality(v_pred, v_acc) if len(verified) >= 2 else None,
            "verify_levels": levels,  # per round: measured / re-timed references (None: nothing timed)
            "points": points,
        }
