"""GP-NAS performance predictor on subnet encodings, built on ``paddleslim.nas.GPNAS``.

PaddleSlim's GPNAS is Bayesian linear regression plus a Gaussian-process correction:
``get_initial_mean`` fits the prior weights w0 by least squares, ``get_initial_cov`` sets their
prior covariance (hp_cov * I), ``get_posterior_mean`` updates w with the kernel matrix of the
encodings as the observation covariance (m_flag 2: the closed-form posterior; m_flag 1: a
Woodbury-style update), ``get_predict`` is the linear mean x.w and ``get_predict_jiont`` adds
the GP correction K(x, X) K(X, X)^-1 (y - X.w). Kernels (c_flag): 1 = 0.5 exp(-|d|^2 / 16)
(RBF), 2 = exp(-|d| / 12) (exponential). We follow PaddleSlim's GP-NAS demo: prior mean from
one half of the samples, posterior from the other half, joint prediction from all of them.

GPNAS used raw fits our encodings poorly, so ``fit`` normalises first (raw vs normalised, measured
with benchmark/gpnas_quality.py: docs/notes/chip_search.md).
- Its kernel length scales are fixed (16 and 12), while our features lie in [0, 1]. Every pair
  of subnets then looks alike to the kernel. So columns are standardised and scaled until the
  median distance between training subnets equals the kernel's length scale.
- Columns that never vary over the training set (e.g. the always-active first blocks) only
  add singular directions to the least-squares prior, so they are dropped.
- The prior covariance (0.01 * I) assumes targets of unit scale, so targets (ms, mAP) are
  standardised and predictions mapped back.
- The jitter hp_mat (1e-7) doubles as the observation noise, and hp_cov sets the prior's
  strength. Noise suits latency, but accuracy on a finite validation set is noisy. Both are
  therefore chosen from a small grid by 5-fold cross-validated error on the training samples.
- An isotropic kernel weighs every column alike, and a subnet's accuracy depends on a few (the
  number of heads, depth) far more than on the rest. With ``weighting="ridge"`` each
  standardised column is scaled by its |ridge coefficient| on the targets (the largest 1), a
  cheap relevance estimate in place of ARD length scales, which 20-40 samples cannot fit.
  "auto" (the default) lets the same cross-validation choose between it and no weighting;
  the weights are refitted inside every fold, so the choice never sees its held-out targets
  (its measured effect: docs/notes/chip_search.md).
"""
import functools

import numpy as np

from ..utils.errors import ConfigError

LENGTH_SCALE = {1: 4.0, 2: 12.0}  # the distance at which GPNAS's kernel (c_flag) has decayed
WEIGHTINGS = ("none", "ridge")
RIDGE = 0.1  # ridge penalty per sample, on standardised columns and targets
NOISE_GRID = (1e-7, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
PRIOR_GRID = (1e-2, 1e-1, 1.0, 10.0)
HP_GRID = tuple((n, c) for n in NOISE_GRID for c in PRIOR_GRID)
MIN_SAMPLES = 4


def kendall_tau(a, b):
    """Kendall rank correlation (tau-b, ties handled); nan if either side is constant."""
    from scipy.stats import kendalltau
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(f"kendall_tau: {len(a)} vs {len(b)} values")
    return float(kendalltau(a, b).correlation)


def rmse(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.sqrt(np.mean((a - b) ** 2)))


def quality(predicted, measured):
    """{"tau", "rmse", "n"} of predictions against measurements of the same subnets."""
    return {"tau": kendall_tau(predicted, measured), "rmse": rmse(predicted, measured), "n": int(len(measured))}


@functools.lru_cache(maxsize=None)
def _gpnas_class():
    """GPNAS with its kernel matrices vectorised: the same _get_corelation formulas, but
    PaddleSlim builds them entry by entry in Python (seconds for a few thousand candidates)."""
    import warnings
    with warnings.catch_warnings():  # paddleslim's imports emit deprecation noise
        warnings.simplefilter("ignore")
        from paddleslim.nas import GPNAS

    class VectorisedGPNAS(GPNAS):
        def _get_cor_mat_joint(self, X, X_train):
            X, X_train = np.asarray(X, np.float64), np.asarray(X_train, np.float64)
            sq = np.maximum((X * X).sum(1)[:, None] + (X_train * X_train).sum(1)[None]
                            - 2.0 * X @ X_train.T, 0.0)
            if self.c_flag == 1:
                return np.asmatrix(0.5 * np.exp(-sq / 16))
            return np.asmatrix(np.exp(-np.sqrt(sq) / 12))

        def _get_cor_mat(self, X):
            return self._get_cor_mat_joint(X, X)

    return VectorisedGPNAS


FEATURES = ("summary", "encoding", "both")


def subnet_features(space, subnets, kind="summary"):
    """Predictor inputs. "encoding": ``space.encode`` (block by block). "summary": the encoding's
    blocks summed (depth, total heads, total ratio, count of each FFN path) plus the total MLP
    hidden width (the mix path counts twice): position-free, 7 numbers, which 20-40 samples can
    fit where the 37-long encoding leaves a linear mean underdetermined. "both": the two joined."""
    if kind not in FEATURES:
        raise ConfigError(f"Search.features={kind!r}; expected one of {list(FEATURES)}")
    rows = []
    for s in subnets:
        v = space.encode(s)
        summary = np.append(v[1:].reshape(space.max_depth, 6).sum(0),
                            sum(m for _, m in space.block_widths(s)) / (2.0 * space.full_hidden)) / space.max_depth
        rows.append({"encoding": v, "summary": summary, "both": np.concatenate([v, summary])}[kind])
    return np.array(rows, np.float64).reshape(len(rows), -1)


def relevance(Z, t, weighting):
    """Per-column kernel weights of standardised inputs ``Z`` for targets ``t`` (see module doc)."""
    if weighting == "none":
        return np.ones(Z.shape[1])
    beta = np.linalg.solve(Z.T @ Z + RIDGE * len(Z) * np.eye(Z.shape[1]), Z.T @ t)
    w = np.abs(beta)
    return w / w.max() if w.max() > 0 else np.ones(Z.shape[1])


def median_scale(c_flag, Z):
    """The factor that makes the median distance between rows of ``Z`` the kernel's length scale."""
    d = np.sqrt(((Z[:, None] - Z[None]) ** 2).sum(-1))[np.triu_indices(len(Z), 1)]
    return LENGTH_SCALE[c_flag] / max(float(np.median(d)), 1e-12)


class GPNASPredictor:
    """Fit on (encoding, measured value) pairs; ``predict`` the value of unseen encodings."""

    def __init__(self, c_flag=2, m_flag=2, hp=None, weighting="auto"):
        if c_flag not in LENGTH_SCALE or m_flag not in (1, 2):
            raise ConfigError(f"GPNASPredictor: c_flag {c_flag} / m_flag {m_flag}; both must be 1 or 2")
        if weighting not in WEIGHTINGS + ("auto",):
            raise ConfigError(f"GPNASPredictor: weighting {weighting!r}; expected one of {list(WEIGHTINGS) + ['auto']}")
        self.c_flag, self.m_flag, self.fixed_hp, self.weighting_choice = c_flag, m_flag, hp, weighting
        self.gp = None

    # -- normalisation -------------------------------------------------------------------------
    def _features(self, X):
        return (np.asarray(X, np.float64)[:, self.keep] - self.mu) / self.sigma * self.weights * self.scale

    def _fit_normalisation(self, X, y):
        self.keep = np.flatnonzero(X.std(0) > 1e-12)
        if not len(self.keep):
            raise ValueError("GPNASPredictor.fit: every training encoding is the same")
        Xk = X[:, self.keep]
        self.mu, self.sigma = Xk.mean(0), Xk.std(0)
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        return (Xk - self.mu) / self.sigma, (y - self.y_mean) / self.y_std

    def _weigh(self, S, t, weighting):
        """(kernel inputs, column weights, scale) of standardised ``S`` under ``weighting``."""
        w = relevance(S, t, weighting)
        scale = median_scale(self.c_flag, S * w)
        return S * w * scale, w, scale

    # -- GPNAS -----------------------------------------------------------------------------
    def _gpnas(self, Z, t, hp):
        gp = _gpnas_class()(c_flag=self.c_flag, m_flag=self.m_flag)
        gp.hp_mat, gp.hp_cov = hp
        gp.get_initial_mean(Z[0::2], t[0::2])
        gp.get_initial_cov(Z)
        gp.get_posterior_mean(Z[1::2], t[1::2])
        return gp

    @staticmethod
    def _joint(gp, Zq, Z, t):
        return np.asarray(gp.get_predict_jiont(Zq, Z, t)).ravel()

    def _quiet(self, fn, *args):
        """GPNAS works in np.matrix (deprecated by numpy: silenced) and inverts matrices of a few
        dozen rows, where threaded BLAS only adds overhead: on this 2-core machine, shared, one
        fit took 12 s with OpenBLAS's default threads and 0.23 s with one."""
        import warnings
        from contextlib import nullcontext
        try:
            from threadpoolctl import threadpool_limits  # installed with paddleslim (via scikit-learn)
            limit = threadpool_limits(1, user_api="blas")
        except ImportError:
            limit = nullcontext()
        with warnings.catch_warnings(), limit:
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return fn(*args)

    def _cv_errors(self, S, t, weighting, grid, folds=5):
        """{hp: 5-fold CV mean squared error}; weights and scale are refitted on each fold's training part."""
        err = {hp: [] for hp in grid}
        for k in range(folds):
            m = np.arange(len(S)) % folds != k
            Z, w, scale = self._weigh(S[m], t[m], weighting)
            Zq = S[~m] * w * scale
            for hp in grid:
                gp = self._gpnas(Z, t[m], hp)
                err[hp].append(self._joint(gp, Zq, Z, t[m]) - t[~m])
        return {hp: float(np.mean(np.square(np.concatenate(e)))) for hp, e in err.items()}

    def fit(self, X, y):
        return self._quiet(self._fit, X, y)

    def predict(self, X):
        return self._quiet(self._predict, X)

    def _fit(self, X, y):
        X, y = np.asarray(X, np.float64), np.asarray(y, np.float64).ravel()
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"GPNASPredictor.fit: X {X.shape} and y {y.shape} do not pair up")
        if len(X) < MIN_SAMPLES:
            raise ValueError(f"GPNASPredictor.fit: {len(X)} samples; needs at least {MIN_SAMPLES}")
        if not np.all(np.isfinite(y)):
            raise ValueError("GPNASPredictor.fit: targets contain nan/inf")
        S, self.t = self._fit_normalisation(X, y)
        grid = [tuple(self.fixed_hp)] if self.fixed_hp is not None else HP_GRID
        choices = WEIGHTINGS if self.weighting_choice == "auto" else (self.weighting_choice,)
        if len(grid) * len(choices) == 1:
            self.weighting, self.hp = choices[0], grid[0]
        else:
            losses = {(wt, hp): e for wt in choices for hp, e in self._cv_errors(S, self.t, wt, grid).items()}
            self.weighting, self.hp = min(losses, key=losses.get)
        self.Z, self.weights, self.scale = self._weigh(S, self.t, self.weighting)
        self.gp = self._gpnas(self.Z, self.t, self.hp)
        return self

    def _predict(self, X):
        if self.gp is None:
            raise RuntimeError("GPNASPredictor.predict before fit")
        X = np.asarray(X, np.float64)
        out = []
        for i in range(0, len(X), 512):  # GPNAS builds its kernel matrices in Python loops
            out.append(self._joint(self.gp, self._features(X[i:i + 512]), self.Z, self.t))
        return np.concatenate(out) * self.y_std + self.y_mean if out else np.zeros(0)
