"""Statistics for experiments: the paired bootstrap, Hedges' g, Benjamini–Hochberg, t-test power,
volatility regimes and the conditional Sharpe ratio (issue 13, the research plan's §5.2 and §12).

Small pure functions over NumPy arrays. They run on the host, after an experiment, over its
per-episode results (every method evaluated on the same paths, so samples are *paired*); none is
meant to be traced by JAX. Every formula is written out in docs/statistics.md.

Randomness comes only from an explicit seed (an int or a JAX key), turned into a NumPy
``Generator``: the same seed and inputs give the same bits. The bootstrap draws its resamples
exactly as ``scipy.stats.bootstrap`` does (one ``integers(0, n, (batch, n))`` per batch and
sample), so with the same seed and batch the two give the same bootstrap distribution.

A user's mistake (NaN in the data, too few episodes, an edge outside (0, 1)) is a ``ValueError``
that names the argument and the problem.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import special
from scipy import stats as sps

# One bootstrap block holds at most this many resampled values per sample (32 MiB in float64);
# the number of resamples per block is the *batch*.
_BLOCK = 2**22

Statistic = Callable[..., Any]


# --------------------------------------------------------------------------- input checks


def _vector(x, name: str, least: int = 1, needs: str = "this") -> np.ndarray:
    """``x`` as a finite 1-D float64 array of at least ``least`` values, or a ValueError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array (one value per episode), got shape {arr.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name} has {bad.size} non-finite value(s) (NaN or ±inf), the first at index "
            f"{bad[0]}: drop or repair those episodes before computing statistics"
        )
    if arr.size < least:
        raise ValueError(f"{name} has {arr.size} value(s); {needs} needs at least {least}")
    return arr


def _fraction(value: float, name: str, *, closed_right: bool = False) -> float:
    ok = 0.0 < value <= 1.0 if closed_right else 0.0 < value < 1.0
    if not ok:
        interval = "(0, 1]" if closed_right else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


def _generator(seed) -> np.random.Generator:
    """A NumPy Generator from an explicit seed: a non-negative int, or a JAX PRNG key (typed, or
    the raw ``uint32[2]`` of ``jax.random.PRNGKey``), whose key data seeds a SeedSequence."""
    if seed is None or isinstance(seed, (bool, float, np.random.Generator)):
        raise ValueError(
            f"seed must be an explicit int or JAX key, got {seed!r}: results must be reproducible"
        )
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        return np.random.default_rng(int(seed))
    dtype = getattr(seed, "dtype", None)
    if dtype is not None and not isinstance(seed, np.ndarray):
        import jax  # a typed key (jax.random.key) carries its bits as key data
        import jax.numpy as jnp

        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            seed = jax.random.key_data(seed)
    data = np.asarray(seed)
    if data.size == 0 or not np.issubdtype(data.dtype, np.integer) or np.any(data < 0):
        raise ValueError(f"seed must be a non-negative int or a JAX key, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(v) for v in data.ravel()]))


# --------------------------------------------------------------------------- Sharpe


def sharpe(returns, periods: int = 1, eps: float = 1e-12, axis: int = -1):
    """The Sharpe ratio exactly as the language's ``sharpe`` op computes it (library/losses.py):

        sharpe(r) = mean(r) / sqrt(var(r) + eps) · sqrt(periods),   var with ddof = 0

    over ``axis`` (the last by default, so it is a vectorised bootstrap statistic). No risk-free
    rate is subtracted; ``periods=252`` annualises daily returns, and the default 1 leaves
    per-episode P&L as it is (the op's default too). ``eps`` keeps constant returns finite.

    >>> round(float(sharpe([0.01, 0.03, -0.01, 0.05])), 6)
    0.894427
    >>> round(float(sharpe([0.01, 0.03, -0.01, 0.05], periods=252)), 4)
    14.1986
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0 or r.shape[axis] == 0:
        raise ValueError("returns is empty: the Sharpe ratio needs at least one value")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns has non-finite values (NaN or ±inf): drop or repair them first")
    return np.mean(r, axis=axis) / np.sqrt(np.var(r, axis=axis) + eps) * np.sqrt(periods)


# --------------------------------------------------------------------------- bootstrap


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """A bootstrap estimate.

    ``estimate`` is the statistic of the data itself; ``percentile`` and ``bca`` are the
    two-sided ``confidence`` intervals (``bca`` is None where the bias-corrected and accelerated
    interval does not exist: a degenerate bootstrap distribution or constant jackknife values);
    ``std`` is the bootstrap distribution's standard deviation (ddof = 1, scipy's
    ``standard_error``); ``p_value`` the two-sided bootstrap p-value of "the statistic is 0";
    ``distribution`` the ``resamples`` resampled statistics, in draw order.
    """

    estimate: float
    percentile: tuple[float, float]
    bca: tuple[float, float] | None
    std: float
    p_value: float
    resamples: int
    confidence: float
    distribution: np.ndarray = dataclasses.field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for results.json (the distribution left out)."""
        return {
            "estimate": self.estimate,
            "percentile": list(self.percentile),
            "bca": None if self.bca is None else list(self.bca),
            "std": self.std,
            "p_value": self.p_value,
            "resamples": self.resamples,
            "confidence": self.confidence,
        }


def _call(statistic: Statistic, arrays: Sequence[np.ndarray], vectorized: bool) -> np.ndarray:
    """The statistic of each row of ``arrays`` (each ``[k, n_j]``) → ``[k]``."""
    if vectorized:
        return np.asarray(statistic(*arrays, axis=-1), dtype=np.float64)
    rows = arrays[0].shape[0]
    return np.array([statistic(*(a[i] for a in arrays)) for i in range(rows)], dtype=np.float64)


def _jackknife(
    statistic: Statistic, samples: Sequence[np.ndarray], paired: bool, vectorized: bool
) -> list[np.ndarray]:
    """Leave-one-out values of the statistic: one array per sample (per pair when paired)."""
    groups = [None] if paired else list(range(len(samples)))
    out = []
    for j in groups:
        n = samples[0].size if j is None else samples[j].size
        cols = np.arange(n - 1)
        values = []
        step = max(1, _BLOCK // max(1, n - 1))
        for start in range(0, n, step):
            left = np.arange(start, min(n, start + step))
            keep = cols[None, :] + (cols[None, :] >= left[:, None])  # row i omits index i
            arrays = [
                s[keep] if (j is None or k == j) else np.broadcast_to(s, (left.size, s.size))
                for k, s in enumerate(samples)
            ]
            values.append(_call(statistic, arrays, vectorized))
        out.append(np.concatenate(values))
    return out


def _bca(
    theta: float,
    distribution: np.ndarray,
    jackknife: list[np.ndarray],
    alpha: float,
) -> tuple[float, float] | None:
    """Efron's BCa interval (Efron & Tibshirani 1993, §14.3, eq. 15.36), as scipy computes it."""
    below = np.count_nonzero(distribution < theta) + np.count_nonzero(distribution <= theta)
    z0 = special.ndtri(below / (2 * distribution.size))  # bias correction; ties count half
    # acceleration from the jackknife: U = (n − 1)(mean θ₍·₎ − θ₍ᵢ₎), per sample j
    num = den = 0.0
    for values in jackknife:
        n = float(values.size)
        u = (n - 1) * (values.mean() - values)
        num += np.sum(u**3) / n**3
        den += np.sum(u**2) / n**2
    if not np.isfinite(z0) or not np.isfinite(den) or den <= 0 or not np.isfinite(num):
        return None  # a degenerate distribution, or a jackknife value undefined or all equal
    a = num / (6 * den**1.5)
    ends = []
    for z in (special.ndtri(alpha), special.ndtri(1 - alpha)):
        ends.append(special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))))
    low, high = np.quantile(distribution, ends)
    return float(low), float(high)


def bootstrap(
    statistic: Statistic,
    samples: Sequence,
    *,
    seed,
    paired: bool = True,
    resamples: int = 10_000,
    confidence: float = 0.95,
    bca: bool = True,
    vectorized: bool | None = None,
    batch: int | None = None,
) -> BootstrapResult:
    """Bootstrap a statistic of one or more samples of per-episode values.

    ``statistic(*samples, axis=-1)`` reduces the last axis (vectorised, as ``np.mean``); one
    without an ``axis`` parameter is called once per resample (``vectorized`` says which when
    its signature cannot). ``paired``: every sample has one value per episode and a resample
    draws episodes, keeping each episode's values together; otherwise each sample is resampled
    on its own.

    For resample b (b = 1…B) the statistic is θ*_b; with θ̂ the statistic of the data and
    α = (1 − confidence)/2:

    - percentile interval: the α and 1 − α quantiles of θ* (linear interpolation);
    - BCa interval: the quantiles at Φ(z₀ + (z₀ + z)/(1 − a(z₀ + z))) for z = Φ⁻¹(α), Φ⁻¹(1 − α),
      z₀ = Φ⁻¹((#{θ* < θ̂} + #{θ* ≤ θ̂}) / 2B), a from the jackknife (docs/statistics.md);
      skipped when ``bca`` is False (it evaluates the statistic n times on n − 1 values);
    - std = sd(θ*) with ddof = 1;
    - p-value of θ = 0: p = min(1, 2 (1 + k)/(B + 1)) with k = #{θ*_b ≤ 0} when θ̂ > 0,
      #{θ*_b ≥ 0} when θ̂ < 0 (and p = 1 when θ̂ = 0): twice the share of resamples on the
      other side of 0, counting the data as one of them.

    Resamples are drawn in batches of ``batch`` (by default as many as fit 4 Mi values per
    sample); the seed and the batch fix the bits.

    >>> r = bootstrap(np.mean, [[1.0, 2.0, 3.0, 4.0, 5.0]], seed=0, resamples=2000)
    >>> r.estimate, r.percentile[0] < 3 < r.percentile[1], r.p_value < 0.01
    (3.0, True, True)
    """
    arrays = [_vector(s, f"sample {k}", 2, "the bootstrap") for k, s in enumerate(samples)]
    if not arrays:
        raise ValueError("bootstrap needs at least one sample")
    if paired and len({a.size for a in arrays}) > 1:
        sizes = [a.size for a in arrays]
        raise ValueError(f"paired samples must have one value per episode each, got sizes {sizes}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    confidence = _fraction(confidence, "confidence")
    rng = _generator(seed)
    if vectorized is None:
        try:
            vectorized = "axis" in inspect.signature(statistic).parameters
        except (TypeError, ValueError):  # a ufunc-like without a signature: try numpy's way
            vectorized = True

    theta = float(_call(statistic, [a[None, :] for a in arrays], vectorized)[0])
    if not np.isfinite(theta):
        raise ValueError(f"the statistic of the data is {theta}: it must be finite")
    width = arrays[0].size if paired else sum(a.size for a in arrays)
    if batch is None:
        batch = resamples if resamples * width <= _BLOCK else max(1, _BLOCK // width)
    parts = []
    for start in range(0, resamples, batch):
        k = min(batch, resamples - start)
        if paired:
            # scipy's paired resampling: one index matrix, applied to every sample
            idx = rng.integers(0, arrays[0].size, (k, arrays[0].size))
            drawn = [a[idx] for a in arrays]
        else:
            drawn = [a[rng.integers(0, a.size, (k, a.size))] for a in arrays]
        parts.append(_call(statistic, drawn, vectorized))
    dist = np.concatenate(parts)
    bad = np.count_nonzero(~np.isfinite(dist))
    if bad:
        raise ValueError(
            f"{bad} of {resamples} resampled statistics are not finite (a resample with zero "
            "spread, say): the statistic is undefined on some resamples of these data"
        )

    alpha = (1 - confidence) / 2
    low, high = np.quantile(dist, [alpha, 1 - alpha])
    interval = None
    if bca:
        interval = _bca(theta, dist, _jackknife(statistic, arrays, paired, vectorized), alpha)
    if theta > 0:
        k = np.count_nonzero(dist <= 0)
    elif theta < 0:
        k = np.count_nonzero(dist >= 0)
    else:
        k = resamples
    return BootstrapResult(
        estimate=theta,
        percentile=(float(low), float(high)),
        bca=interval,
        std=float(np.std(dist, ddof=1)) if resamples > 1 else 0.0,
        p_value=float(min(1.0, 2 * (1 + k) / (resamples + 1))),
        resamples=int(resamples),
        confidence=confidence,
        distribution=dist,
    )


def paired_bootstrap(
    a,
    b,
    stat: Statistic = np.mean,
    *,
    seed,
    resamples: int = 10_000,
    confidence: float = 0.95,
    bca: bool = True,
    batch: int | None = None,
) -> BootstrapResult:
    """The paired bootstrap of θ = stat(a) − stat(b): ``a[i]`` and ``b[i]`` are two methods'
    results on the same episode i, and a resample draws episodes with replacement, keeping each
    pair. ``stat(x, axis=-1)`` reduces the last axis: ``np.mean`` (mean P&L), :func:`sharpe`,
    ``np.median``… The intervals, std and p-value are :func:`bootstrap`'s.

    >>> a = [1.2, 0.8, 1.9, 1.4, 0.7, 1.6, 1.1, 1.3]
    >>> b = [1.0, 0.9, 1.5, 1.0, 0.6, 1.2, 1.0, 1.1]
    >>> r = paired_bootstrap(a, b, seed=7, resamples=5000)
    >>> round(r.estimate, 3), r.percentile[0] > 0, r.p_value < 0.05
    (0.212, True, True)
    """
    a = _vector(a, "a", 2, "the paired bootstrap")
    b = _vector(b, "b", 2, "the paired bootstrap")
    if a.size != b.size:
        raise ValueError(
            f"a and b must hold the same episodes (paired), got {a.size} and {b.size} values"
        )

    def difference(x, y, axis=-1):
        return stat(x, axis=axis) - stat(y, axis=axis)

    return bootstrap(
        difference,
        (a, b),
        seed=seed,
        paired=True,
        resamples=resamples,
        confidence=confidence,
        bca=bca,
        vectorized=True,
        batch=batch,
    )


# --------------------------------------------------------------------------- effect size


def hedges_correction(df, exact: bool = True):
    """Hedges' small-sample factor J(df) that makes g = J·d unbiased for normal data:

        exact:  J(df) = Γ(df/2) / (√(df/2) · Γ((df − 1)/2))        (Hedges 1981)
        approx: J(df) = 1 − 3 / (4·df − 1)                         (Hedges & Olkin 1985)

    The approximation is above the exact factor by 4e-4 (relative) at df = 10, by less than
    1e-4 from df = 20.

    >>> round(float(hedges_correction(98)), 6), round(float(hedges_correction(98, exact=False)), 6)
    (0.992324, 0.992327)
    """
    df = np.asarray(df, dtype=np.float64)
    if exact:
        return np.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / np.sqrt(df / 2)
    return 1 - 3 / (4 * df - 1)


def _g(a, b, *, paired: bool, exact: bool, axis: int = -1):
    """Hedges' g along ``axis`` (vectorised; no checks: NaN or ±inf where the spread is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if paired:
            diff = a - b
            n = diff.shape[axis]
            d = np.mean(diff, axis=axis) / np.std(diff, axis=axis, ddof=1)
            df = n - 1
        else:
            n1, n2 = a.shape[axis], b.shape[axis]
            df = n1 + n2 - 2
            pooled = (
                (n1 - 1) * np.var(a, axis=axis, ddof=1) + (n2 - 1) * np.var(b, axis=axis, ddof=1)
            ) / df
            d = (np.mean(a, axis=axis) - np.mean(b, axis=axis)) / np.sqrt(pooled)
    return hedges_correction(df, exact) * d


def hedges_g_along(a, b, *, paired: bool, exact: bool = True, axis: int = -1):
    """:func:`hedges_g` along ``axis`` of arrays, vectorised and unchecked (NaN or ±inf where
    the spread is 0): what a bootstrap evaluates on every resample at once.

    >>> hedges_g_along(np.array([[3.0, 4.0, 5.0, 6.0]]), np.array([[1.0, 2.0, 3.0, 4.0]]),
    ...                paired=False).round(4).tolist()
    [1.3457]
    """
    return _g(np.asarray(a), np.asarray(b), paired=paired, exact=exact, axis=axis)


def _effect_inputs(a, b, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    if paired:
        a = _vector(a, "a", 3, "a paired Hedges' g (df = n − 1 ≥ 2)")
        b = _vector(b, "b", 3, "a paired Hedges' g (df = n − 1 ≥ 2)")
        if a.size != b.size:
            raise ValueError(f"paired a and b must have the same length, got {a.size} and {b.size}")
        if np.all(a - b == (a - b)[0]):
            raise ValueError(
                "the paired differences a − b are constant: their standard deviation is 0 and "
                "the standardised effect size is undefined"
            )
    else:
        a = _vector(a, "a", 2, "Hedges' g")
        b = _vector(b, "b", 2, "Hedges' g")
        if a.size + b.size < 4:
            raise ValueError(f"Hedges' g needs df = n_a + n_b − 2 ≥ 2, got {a.size + b.size - 2}")
        if np.all(a == a[0]) and np.all(b == b[0]):
            raise ValueError(
                "a and b are both constant: the pooled standard deviation is 0 and the "
                "standardised effect size is undefined"
            )
    return a, b


def hedges_g(a, b, paired: bool = False, exact: bool = True) -> float:
    """Hedges' g of a against b: the standardised mean difference with the small-sample factor
    J (:func:`hedges_correction`, the exact gamma form unless ``exact=False``).

    - independent (``paired=False``): g = J(n_a + n_b − 2) · (mean a − mean b) / s_p,
      s_p² = ((n_a − 1) s_a² + (n_b − 1) s_b²) / (n_a + n_b − 2), sample variances (ddof = 1);
    - paired (same episodes): g = J(n − 1) · mean(a − b) / sd(a − b), Cohen's d_z corrected —
      the effect the paired t-test tests (t = d_z √n) and :func:`power` takes.

    Positive when a's mean is above b's.

    >>> round(hedges_g([3.0, 4.0, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0]), 4)
    1.3457
    """
    a, b = _effect_inputs(a, b, paired)
    return float(_g(a, b, paired=paired, exact=exact))


def hedges_g_ci(
    a,
    b,
    paired: bool = False,
    *,
    seed,
    resamples: int = 10_000,
    confidence: float = 0.95,
    exact: bool = True,
    bca: bool = True,
    batch: int | None = None,
) -> BootstrapResult:
    """:func:`hedges_g` with bootstrap intervals: episodes resampled in pairs when ``paired``,
    each group on its own otherwise (:func:`bootstrap`; its p-value tests g = 0).

    >>> r = hedges_g_ci([3.0, 4.0, 5.0, 6.0, 5.5], [1.0, 2.0, 3.0, 4.0, 2.5], seed=1,
    ...                 resamples=2000, bca=False)
    >>> round(r.estimate, 4), r.percentile[0] > 0
    (1.7092, True)
    """
    a, b = _effect_inputs(a, b, paired)

    def g(x, y, axis=-1):
        return _g(x, y, paired=paired, exact=exact, axis=axis)

    return bootstrap(
        g,
        (a, b),
        seed=seed,
        paired=paired,
        resamples=resamples,
        confidence=confidence,
        bca=bca,
        vectorized=True,
        batch=batch,
    )


# --------------------------------------------------------------------------- multiple testing


@dataclasses.dataclass(frozen=True)
class FdrResult:
    """Benjamini–Hochberg: ``adjusted`` p-values and ``rejected`` hypotheses, in input order."""

    adjusted: np.ndarray
    rejected: np.ndarray
    q: float


def benjamini_hochberg(pvalues, q: float = 0.05) -> FdrResult:
    """Benjamini–Hochberg (1995) over all m comparisons of an experiment, controlling the false
    discovery rate at ``q``. With the p-values sorted, p₍₁₎ ≤ … ≤ p₍ₘ₎:

        adjusted p₍ᵢ₎ = min over j ≥ i of min(1, m · p₍ⱼ₎ / j),     rejected ⇔ adjusted ≤ q

    which rejects exactly H₍₁₎…H₍ₖ₎ for the largest k with p₍ₖ₎ ≤ k q / m (statsmodels'
    ``multipletests(method="fdr_bh")``).

    >>> r = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    >>> r.adjusted.round(6).tolist(), r.rejected.tolist()
    ([0.02, 0.04, 0.04, 0.02], [True, True, True, True])
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be a 1-D array, got shape {p.shape}")
    bad = np.flatnonzero(~(np.isfinite(p) & (p >= 0) & (p <= 1)))
    if bad.size:
        raise ValueError(
            f"pvalues must be in [0, 1]; {bad.size} are not (NaN or out of range), the first at "
            f"index {bad[0]}: {p[bad[0]]}"
        )
    q = _fraction(q, "q")
    m = p.size
    order = np.argsort(p, kind="stable")
    # m/j first: the factor is ≥ 1 exactly, so no adjusted value rounds below its p-value
    scaled = np.minimum(1.0, p[order] * (m / np.arange(1, m + 1)))
    adjusted_sorted = np.minimum.accumulate(scaled[::-1])[::-1]  # running min from the top
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return FdrResult(adjusted=adjusted, rejected=adjusted <= q, q=q)


# --------------------------------------------------------------------------- power


def _power(effect: float, n: int, alpha: float, paired: bool) -> float:
    df = n - 1 if paired else 2 * n - 2
    ncp = effect * math.sqrt(n if paired else n / 2)
    t = sps.t.ppf(1 - alpha / 2, df)
    out = float(sps.nct.sf(t, df, ncp) + sps.nct.cdf(-t, df, ncp))
    if not math.isfinite(out):
        # scipy's noncentral t gives NaN far in its tail (ncp ≳ 15: thousands of pairs at
        # effect 0.3); there df is large and T is normal to many digits
        out = float(sps.norm.sf(t - ncp) + sps.norm.cdf(-t - ncp))
    return out


def _power_inputs(effect: float, alpha: float) -> float:
    if not math.isfinite(effect):
        raise ValueError(f"effect must be finite, got {effect}")
    return _fraction(alpha, "alpha")


def power(effect: float, n: int, alpha: float = 0.05, paired: bool = True) -> float:
    """The power of the two-sided t-test at level ``alpha`` to detect a standardised effect:

    - paired (``n`` pairs, effect = d_z = mean(a − b)/sd(a − b)): df = n − 1, λ = d √n;
    - independent (``n`` per group, effect = d with the pooled sd): df = 2n − 2, λ = d √(n/2);

        power = P(T > t) + P(T < −t),   T ~ noncentral t(df, λ),   t = t_{df}⁻¹(1 − α/2)

    exact (scipy.stats.nct), as G*Power computes it.

    >>> round(power(0.3, 147), 4), round(power(0.5, 64, paired=False), 4)
    (0.9509, 0.8015)
    """
    alpha = _power_inputs(effect, alpha)
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an int ≥ 2 (pairs, or episodes per group), got {n}")
    return _power(float(effect), int(n), alpha, paired)


def samples_for_power(
    effect: float, power: float = 0.95, alpha: float = 0.05, paired: bool = True
) -> int:
    """The smallest n (pairs when ``paired``, else per group) whose two-sided t-test reaches
    ``power`` (:func:`power`, which grows with n): the experiment's pre-registered size.

    >>> samples_for_power(0.3), samples_for_power(0.5, power=0.8, paired=False)
    (147, 64)
    """
    alpha = _power_inputs(effect, alpha)
    target = _fraction(power, "power")
    if effect == 0:
        raise ValueError("effect is 0: no sample size detects it")
    if target <= alpha:
        raise ValueError(f"power must exceed alpha ({alpha}), got {target}")
    d = abs(float(effect))
    lo, hi = 2, 2
    while _power(d, hi, alpha, paired) < target:
        lo, hi = hi, hi * 2
        if hi > 2**40:
            raise ValueError(f"effect {effect} is too small: no n up to 2**40 reaches {target}")
    while lo < hi:  # bisect the smallest n with power ≥ target
        mid = (lo + hi) // 2
        if _power(d, mid, alpha, paired) >= target:
            hi = mid
        else:
            lo = mid + 1
    return hi


# --------------------------------------------------------------------------- regimes


def _midrank_quantile(x: np.ndarray) -> np.ndarray:
    """u_i = (rank_i − ½)/n with average ranks for ties: each value's empirical quantile."""
    return (sps.rankdata(x, method="average") - 0.5) / x.size


def volatility_regimes(
    realised_vol, edges: Sequence[float] | np.ndarray = (0.25, 0.75, 0.95)
) -> np.ndarray:
    """The volatility regime of each episode, by quantiles of its realised volatility (§5.1):
    with ``u_i = (rank_i − ½)/n`` (average ranks for ties), the regime is the number of edges
    ≤ u_i. The default edges make 0 = low (0–25 %), 1 = medium (25–75 %), 2 = high (75–95 %),
    3 = extreme (95–100 %). Regime k holds the episodes whose mid-rank quantile lies in
    [edge_k, edge_{k+1}), about n·(its width) of them; tied volatilities share a regime (all
    equal: all in the regime that holds the median).

    >>> volatility_regimes([0.10, 0.50, 0.20, 0.90, 0.30, 0.40, 0.60, 0.70]).tolist()
    [0, 1, 0, 2, 1, 1, 1, 2]
    >>> np.bincount(volatility_regimes(np.arange(1, 21) / 100)).tolist()  # 20 episodes
    [5, 10, 4, 1]
    """
    vol = _vector(realised_vol, "realised_vol", 1, "volatility_regimes")
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"edges must be a non-empty sequence of quantiles, got {edges!r}")
    if not (np.all((e > 0) & (e < 1)) and np.all(np.diff(e) > 0)):
        raise ValueError(f"edges must be strictly increasing quantiles in (0, 1), got {edges!r}")
    return np.searchsorted(e, _midrank_quantile(vol), side="right")


def regime_sharpes(pnl, realised_vol, regimes: int = 20) -> np.ndarray:
    """The Sharpe ratio of each of ``regimes`` equal-count volatility regimes, lowest volatility
    first: episodes split by :func:`volatility_regimes` at edges k/regimes (k = 1…regimes − 1),
    and regime r's Sharpe is :func:`sharpe` (periods = 1) of the per-episode P&L of its episodes.
    NaN for a regime with fewer than 2 episodes (ties in the volatility can empty some).

    >>> regime_sharpes([1.0, 2.0, 3.0, 1.0], [0.1, 0.2, 0.3, 0.4], regimes=2).round(3).tolist()
    [3.0, 2.0]
    """
    pnl = _vector(pnl, "pnl", 2, "a regime Sharpe ratio")
    vol = _vector(realised_vol, "realised_vol", 2, "a regime Sharpe ratio")
    if pnl.size != vol.size:
        raise ValueError(
            f"pnl and realised_vol must have one value per episode, got {pnl.size} and {vol.size}"
        )
    if int(regimes) != regimes or regimes < 1:
        raise ValueError(f"regimes must be a positive int, got {regimes}")
    if pnl.size < 2 * regimes:
        raise ValueError(
            f"{pnl.size} episodes cannot fill {regimes} regimes of at least 2 episodes each"
        )
    label = volatility_regimes(vol, np.arange(1, regimes) / regimes) if regimes > 1 else None
    out = np.full(regimes, np.nan)
    for r in range(regimes):
        x = pnl if label is None else pnl[label == r]
        if x.size >= 2:
            out[r] = sharpe(x)
    return out


def conditional_sharpe(pnl, realised_vol, bottom: float = 0.2, regimes: int = 20) -> float:
    """The plan's robustness ratio (§1, §12): the median Sharpe of the worst ``bottom`` share
    of volatility regimes over the median Sharpe of all regimes,

        S = regime_sharpes(pnl, realised_vol, regimes)   (regimes with < 2 episodes dropped)
        conditional Sharpe = median(the ⌈bottom · |S|⌉ lowest of S) / median(S)

    "Regimes" are ``regimes`` equal-count buckets of realised volatility (default 20 buckets of
    5 %, so the bottom 20 % are the 4 worst buckets); the Sharpe of a regime is over the
    per-episode P&L of its episodes (:func:`regime_sharpes`). 1 means the worst regimes do as
    well as the typical one; the plan asks for ≥ 0.5 and kills below 0. NaN when median(S) ≤ 0:
    the ratio means nothing then.

    >>> pnl = [1.0, 1.2, 0.9, 1.1, 2.0, 2.2, 1.8, 2.1]
    >>> vol = [0.4, 0.4, 0.4, 0.4, 0.1, 0.1, 0.1, 0.1]
    >>> round(conditional_sharpe(pnl, vol, bottom=0.5, regimes=2), 4)
    0.8137
    """
    share = _fraction(bottom, "bottom", closed_right=True)
    s = regime_sharpes(pnl, realised_vol, regimes)
    s = np.sort(s[np.isfinite(s)])
    k = max(1, math.ceil(share * s.size - 1e-9))  # 1e-9: 0.2·20 may round above 4
    overall = float(np.median(s))
    if overall <= 0:
        return math.nan
    return float(np.median(s[:k]) / overall)
