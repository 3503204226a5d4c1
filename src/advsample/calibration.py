"""Calibrated force uncertainty: from the committee's spread σ to the true force error.

The committee's spread is σ_i = sqrt(σ²_i) per atom (eV/Å; σ²_i from
:func:`advsample.uncertainty.atom_force_variance`) and σ_S = sqrt(mean_{i∈S} σ²_i) per
structure (the square root of σ²_F with ``reduce="mean"``). The true error of the committee-mean
force is e_i = sqrt((1/3) Σ_j (F̄_ij − F_true,ij)²) per atom (RMS over the 3 components, eV/Å)
and e_S = sqrt(mean_{i∈S} e_i²) per structure (RMS over its atoms and components).

Model. The error components are Gaussian with zero mean and std s·σ, so that
3 e_i² / (s σ_i)² ~ χ²_3 (per atom) and 3 n_S e_S² / (s σ_S)² ~ χ²_{3 n_S} (per structure, if
its atoms share σ_S). From (σ, e) pairs of a calibration set (labels the committee did not
train on) :meth:`Calibration.fit` fits:

(a) scale s by maximum likelihood. The log-likelihood of the 3 components of atom i is
    −3 log(s σ_i) − Σ_j ε_ij² / (2 s² σ_i²) + const, and Σ_j ε_ij² = 3 e_i², so
    d/ds Σ_i [...] = −3n/s + 3 Σ_i e_i²/(s³ σ_i²) = 0 gives **s² = mean_i(e_i² / σ_i²)**: the
    RMS over 3 components makes the per-component formula exact. Per structure, with k_S = 3 n_S
    components, s² = Σ_S n_S e_S²/σ_S² / Σ_S n_S (``weights`` = atoms per structure; equal
    weights if not given). s·σ is then the expected RMS error sqrt(E[e²]); the expected
    mean error E[e] is s·σ·E[χ_3]/sqrt(3) ≈ 0.921·s·σ per atom.
(b) a power law e ≈ a·σ^b by least squares of log e on log σ (points with σ > 0 and e > 0).
    It estimates the geometric-mean error exp(E[log e]); under the Gaussian model b = 1 and
    a = s·exp(½(ψ(3/2) + ln(2/3))) ≈ 0.8315·s per atom (ψ the digamma function).
(c) split-conformal bound B(σ) = q·σ: normalised nonconformity scores r = e/σ (0/0 := 0,
    x/0 := ∞), q = the k-th smallest r, k = ceil((n+1)(1−α)) (q = ∞ when k > n). For a new
    point exchangeable with the n calibration points, P(e ≤ q·σ) ≥ 1 − α (and < 1 − α + 1/(n+1)
    without ties), whatever the error distribution. Atoms of one structure are correlated,
    so at ``level="atom"`` the guarantee is for a random atom and only approximate; the bound
    holds for each atom on its own, not for all atoms of a structure at once. The guarantee
    needs calibration data drawn like the structures it is applied to (e.g. adversarially
    selected labels over-represent uncertain regions).

A calibration belongs to one committee: refit it whenever the committee is retrained.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

LEVELS = ("atom", "structure")
FORMAT = "advsample.calibration/1"
CALIBRATION_NAME = "calibration.json"
"""File name of a committee's calibration, looked for beside its checkpoint."""


def _array(x) -> np.ndarray:
    """A float64 numpy array of ``x`` (numpy array, torch tensor, list or number)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _out(x: np.ndarray, like):
    """``x`` as a float when ``like`` is a scalar, else as a numpy array."""
    return float(x) if np.ndim(like) == 0 else x


def _structure_index(structure, n_atoms: int, n_structures: int | None) -> tuple[np.ndarray, int]:
    """(structure index [n] as int array, number of structures); all in one when None."""
    if structure is None:
        return np.zeros(n_atoms, dtype=np.int64), 1 if n_structures is None else n_structures
    idx = _array(structure).astype(np.int64)
    if idx.shape != (n_atoms,):
        raise ValueError(f"structure has shape {idx.shape}, expected ({n_atoms},)")
    n = int(idx.max()) + 1 if n_structures is None and n_atoms else (n_structures or 0)
    return idx, n


def _rms_per_structure(squares: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """sqrt of the per-structure mean of per-atom ``squares`` [n_atoms] -> [n]."""
    counts = np.bincount(idx, minlength=n)
    sums = np.bincount(idx, weights=squares, minlength=n)
    return np.sqrt(sums / np.maximum(counts, 1))


def committee_sigma(forces, structure=None, n_structures: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The committee's spread: (σ_i [n], σ_S [B]) in eV/Å from member forces [M, n, 3] (eV/Å).

    σ_i = sqrt((1/3) Σ_j Var_m F_m,ij) (population variance over the M members) and
    σ_S = sqrt(mean_{i∈S} σ²_i). ``structure`` [n] gives each atom's structure (default: all
    atoms in one structure); ``n_structures`` B defaults to structure.max() + 1.
    """
    f = _array(forces)
    if f.ndim != 3:
        raise ValueError(f"forces must be [M, n, 3], got shape {f.shape}")
    var = f.var(axis=0).mean(axis=-1)  # [n] (eV/Å)²
    idx, n = _structure_index(structure, var.shape[0], n_structures)
    return np.sqrt(var), _rms_per_structure(var, idx, n)


def force_errors(pred_forces, true_forces, structure=None, n_structures: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """True errors of the committee-mean force: (e_i [n], e_S [B]) in eV/Å.

    ``pred_forces``: member forces [M, n, 3] (their mean is used) or the mean forces [n, 3]
    (eV/Å); ``true_forces`` [n, 3] (eV/Å). e_i = sqrt((1/3) Σ_j (F̄_ij − F_true,ij)²), the RMS
    over the 3 components; e_S = sqrt(mean_{i∈S} e_i²), the RMS over the structure's atoms and
    components. ``structure`` and ``n_structures`` as in :func:`committee_sigma`.
    """
    pred, true = _array(pred_forces), _array(true_forces)
    if pred.ndim == 3:
        pred = pred.mean(axis=0)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"predicted forces {pred.shape} and true forces {true.shape} "
                         "must both be [n, 3]")
    squares = ((pred - true) ** 2).mean(axis=-1)  # [n] (eV/Å)²
    idx, n = _structure_index(structure, squares.shape[0], n_structures)
    return np.sqrt(squares), _rms_per_structure(squares, idx, n)


def _check_pairs(sigma, error) -> tuple[np.ndarray, np.ndarray]:
    """σ and e as flat float arrays of equal length, finite and non-negative (else ValueError)."""
    s, e = _array(sigma).ravel(), _array(error).ravel()
    if s.shape != e.shape:
        raise ValueError(f"sigma ({s.size}) and error ({e.size}) differ in length")
    for name, x in (("sigma", s), ("error", e)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if (x < 0).any():
            raise ValueError(f"{name} contains negative values")
    return s, e


def _scores(sigma: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Nonconformity scores r = e/σ with 0/0 := 0 and x/0 := ∞."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = error / sigma
    return np.where(error == 0, 0.0, r)


def conformal_quantile(scores, alpha: float = 0.1) -> float:
    """The split-conformal quantile of ``scores`` [n]: the k-th smallest, k = ceil((n+1)(1−α)).

    ∞ when k > n (too few points for level 1 − α). A tolerance of 1e-9 on (n+1)(1−α) keeps
    round-off (e.g. 10·0.9 = 9.000000000000002) from raising k by one.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    r = np.sort(_array(scores).ravel())
    k = math.ceil((r.size + 1) * (1 - alpha) - 1e-9)
    return float(r[k - 1]) if 1 <= k <= r.size else math.inf


def _float_or_none(x: float) -> float | None:
    """``x`` as a JSON-safe float, None when not finite."""
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass
class Calibration:
    """A committee's calibration map from σ (eV/Å) to the true force error (eV/Å).

    scale: s, expected RMS error = s·σ (maximum likelihood under Gaussian error components).
    a, b: power law e ≈ a·σ^b (least squares in log space; a in (eV/Å)^(1−b)).
    q, alpha: conformal (1 − α) upper bound q·σ; q = ∞ if too few points for that level.
    n: number of calibration points; level: "atom" (σ_i, e_i) or "structure" (σ_S, e_S).
    recommended_bound: an optional safe-zone threshold (eV/Å) on :meth:`bound`, used by
    ``advsample check`` when no ``--bound`` is given. meta: free JSON-able provenance (e.g.
    generation, data set). The formulas are in the module docstring.
    """

    scale: float
    a: float
    b: float
    q: float
    alpha: float = 0.1
    n: int = 0
    level: str = "atom"
    recommended_bound: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        """Check ``level`` and ``alpha``."""
        if self.level not in LEVELS:
            raise ValueError(f"calibration level must be one of {LEVELS}, got {self.level!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"calibration alpha must be in (0, 1), got {self.alpha}")

    @classmethod
    def fit(cls, sigma, error, level: str = "atom", alpha: float = 0.1, weights=None,
            recommended_bound: float | None = None, meta: dict | None = None) -> Calibration:
        """Fit scale, power law and conformal quantile on pairs σ [n], e [n] (eV/Å).

        At ``level="atom"`` pass σ_i and e_i, at ``"structure"`` σ_S and e_S (see
        :func:`committee_sigma` and :func:`force_errors`). ``weights`` [n] (e.g. atoms per
        structure) weight the scale's likelihood only; the conformal quantile treats every
        point alike. Points with σ = 0 are left out of the scale (all σ = 0 gives NaN), points
        with σ = 0 or e = 0 out of the power law (NaN if fewer than 2 distinct σ remain).
        Raises ValueError for no points, NaN, negative values or mismatched lengths.
        """
        s, e = _check_pairs(sigma, error)
        if s.size == 0:
            raise ValueError("no calibration points")
        w = np.ones_like(s) if weights is None else _array(weights).ravel()
        if w.shape != s.shape or (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("weights must be finite, non-negative and one per point")
        pos = s > 0
        scale = (math.sqrt(np.sum(w[pos] * (e[pos] / s[pos]) ** 2) / np.sum(w[pos]))
                 if pos.any() and w[pos].sum() > 0 else math.nan)
        a = b = math.nan
        logs = pos & (e > 0)
        if np.unique(s[logs]).size >= 2:
            b, log_a = np.polyfit(np.log(s[logs]), np.log(e[logs]), 1)
            a, b = math.exp(log_a), float(b)
        q = conformal_quantile(_scores(s, e), alpha)
        return cls(scale=scale, a=a, b=b, q=q, alpha=alpha, n=int(s.size), level=level,
                   recommended_bound=recommended_bound, meta=dict(meta or {}))

    def expected_error(self, sigma):
        """Expected RMS force error s·σ (eV/Å) for σ (eV/Å; scalar, array or tensor)."""
        return _out(self.scale * _array(sigma), sigma)

    def power_law(self, sigma):
        """The power-law (geometric-mean) error a·σ^b (eV/Å) for σ (eV/Å)."""
        return _out(self.a * _array(sigma) ** self.b, sigma)

    def bound(self, sigma):
        """The conformal (1 − α) upper bound q·σ on the error (eV/Å) for σ (eV/Å); ∞ if q = ∞."""
        s = _array(sigma)
        return _out(np.full_like(s, math.inf) if math.isinf(self.q) else self.q * s, sigma)

    def evaluate(self, sigma, error, weights=None) -> dict:
        """Out-of-sample diagnostics of this calibration on new pairs σ [n], e [n] (eV/Å).

        Keys: n; spearman (rank correlation of σ and e); coverage (fraction of e ≤ bound(σ),
        target 1 − α); miscalibration_area (:func:`miscalibration_area` with this scale,
        3 degrees of freedom per atom, 3·weights per structure); rmse_expected and
        rmse_observed (sqrt of mean (s·σ)² and of mean e², eV/Å); refit_scale (the scale these
        pairs alone would give). Floats are NaN when undefined.
        """
        s, e = _check_pairs(sigma, error)
        if s.size == 0:
            raise ValueError("no points to evaluate")
        w = np.ones_like(s) if weights is None else _array(weights).ravel()
        dof = 3.0 * w if self.level == "structure" else 3.0
        pos = s > 0
        return {
            "n": int(s.size),
            "spearman": spearman(s, e),
            "coverage": coverage(self.bound(s), e),
            "alpha": self.alpha,
            "miscalibration_area": miscalibration_area(s, e, self.scale, dof=dof),
            "rmse_expected": float(np.sqrt(np.mean((self.scale * s) ** 2))),
            "rmse_observed": float(np.sqrt(np.mean(e ** 2))),
            "refit_scale": float(np.sqrt(np.sum(w[pos] * (e[pos] / s[pos]) ** 2)
                                         / np.sum(w[pos]))) if pos.any() else math.nan,
        }

    def as_dict(self) -> dict:
        """A JSON-safe dict: the fields plus ``"format"``; non-finite floats become None."""
        d = asdict(self)
        for k in ("scale", "a", "b", "q", "recommended_bound"):
            d[k] = _float_or_none(d[k])
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Inverse of :meth:`as_dict` (q None -> ∞, scale/a/b None -> NaN); ValueError for a
        dict that is not a calibration."""
        if not isinstance(d, dict):
            raise ValueError(f"not a calibration (a {type(d).__name__}, not a dict)")
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"calibration format {d.get('format')!r}, this advsample reads "
                             f"{FORMAT!r}")
        missing = [k for k in ("scale", "a", "b", "q") if k not in d]
        if missing:
            raise ValueError(f"not a calibration (no {', '.join(missing)})")

        def num(key, default):
            """d[key] as a float, ``default`` when None; ValueError if not a number."""
            value = d.get(key)
            try:
                return default if value is None else float(value)
            except (TypeError, ValueError):
                raise ValueError(f"calibration {key} is {value!r}, not a number") from None

        bound = d.get("recommended_bound")
        return cls(scale=num("scale", math.nan), a=num("a", math.nan), b=num("b", math.nan),
                   q=num("q", math.inf), alpha=num("alpha", 0.1), n=int(d.get("n", 0)),
                   level=str(d.get("level", "atom")),
                   recommended_bound=None if bound is None else num("recommended_bound", None),
                   meta=dict(d.get("meta") or {}))

    def save(self, path: str | Path) -> None:
        """Write :meth:`as_dict` as JSON to ``path`` (parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """The calibration saved at ``path``: FileNotFoundError if missing, ValueError (naming
        the file) if it is not a calibration JSON."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration {path} does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from None


def beside(checkpoint: str | Path) -> Path:
    """Where the calibration of the committee checkpoint ``checkpoint`` lives by default:
    ``calibration.json`` in the same folder."""
    return Path(checkpoint).parent / CALIBRATION_NAME


def spearman(a, b) -> float:
    """Spearman rank correlation of a [n] and b [n] (ties get average ranks); NaN when either
    is constant or n < 2."""
    x, y = _array(a).ravel(), _array(b).ravel()
    if x.shape != y.shape:
        raise ValueError(f"spearman: lengths differ ({x.size} vs {y.size})")
    if x.size < 2:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(np.sum(rx ** 2) * np.sum(ry ** 2)))
    return float(np.sum(rx * ry) / denom) if denom > 0 else math.nan


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    _, inverse, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks = np.empty(x.size)
    ranks[order] = (first + (counts + 1) / 2.0)[inverse]
    return ranks


def coverage(bound, error) -> float:
    """Fraction of errors at or below their bound (bound scalar or [n], error [n]; eV/Å)."""
    e = _array(error)
    if e.size == 0:
        return math.nan
    return float(np.mean(e <= _array(bound)))


def miscalibration_area(sigma, error, scale: float = 1.0, dof=3) -> float:
    """Area between the expected and observed cumulative fractions of z = sqrt(k)·e/(s·σ).

    error e [n] (eV/Å) is the RMS over k Gaussian components of std s·σ, so z follows the chi
    distribution with k = ``dof`` degrees of freedom: k = 3 for per-atom errors e_i, k = 1 for
    single components (|z| half-normal), k = 3·n_S per structure (``dof`` may be an array).
    With u = chi_k CDF(z) (uniform on [0, 1] when calibrated), the area is ∫₀¹ |F_u(p) − p| dp
    with F_u the empirical CDF of u, computed exactly. 0 = calibrated, at most 0.5; a scale
    off by 3× gives ≈ 0.3-0.45. σ = 0 gives u = 1 (u = 0 when e = 0 too).
    """
    from scipy.special import gammainc

    s, e = _check_pairs(sigma, error)
    if s.size == 0:
        return math.nan
    k = np.broadcast_to(_array(dof), s.shape)
    z2 = np.where(e == 0, 0.0, _scores(s, e) ** 2 * k / scale ** 2)
    u = np.sort(gammainc(k / 2.0, z2 / 2.0))  # chi_k CDF at z = regularised Γ(k/2, z²/2)
    edges = np.concatenate([[0.0], u, [1.0]])
    level = np.arange(u.size + 1) / u.size  # empirical CDF on [edges[j], edges[j+1])

    def antiderivative(x):
        """G(x) = (x − c)|x − c|/2, an antiderivative of |p − c| (c the ECDF level)."""
        return (x - level) * np.abs(x - level) / 2.0

    return float(np.sum(antiderivative(edges[1:]) - antiderivative(edges[:-1])))


@dataclass
class ReliabilityCurve:
    """Binned reliability of a calibration (all [bins], eV/Å unless said otherwise).

    sigma: RMS σ per bin; predicted: RMS of the expected errors s·σ per bin; observed: RMS of
    the true errors per bin; count: points per bin; edges [bins + 1]: σ boundaries; scale:
    the s used. RMS on both sides, so that a calibrated model lies on the diagonal in
    expectation (E[e²] = s²σ²).
    """

    sigma: np.ndarray
    predicted: np.ndarray
    observed: np.ndarray
    count: np.ndarray
    edges: np.ndarray
    scale: float

    def as_dict(self) -> dict:
        """The curve as a JSON-safe dict of lists."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in self.__dict__.items()}


def reliability_curve(sigma, error, bins: int = 10, scale=1.0) -> ReliabilityCurve:
    """Reliability curve of pairs σ [n], e [n] (eV/Å): ``bins`` bins of equal counts by σ
    (fewer when n < bins), each with the RMS predicted error s·σ and the RMS observed error.
    ``scale`` is s, or a :class:`Calibration` whose scale is used.
    """
    s_fac = float(getattr(scale, "scale", scale))
    s, e = _check_pairs(sigma, error)
    if s.size == 0:
        raise ValueError("no points for a reliability curve")
    order = np.argsort(s, kind="mergesort")
    groups = [g for g in np.array_split(order, min(bins, s.size)) if g.size]

    def rms(x):
        """Root mean square of ``x``."""
        return float(np.sqrt(np.mean(x ** 2)))

    edges = [float(s[groups[0]].min())] + [float(s[g].max()) for g in groups]
    return ReliabilityCurve(
        sigma=np.array([rms(s[g]) for g in groups]),
        predicted=np.array([rms(s_fac * s[g]) for g in groups]),
        observed=np.array([rms(e[g]) for g in groups]),
        count=np.array([g.size for g in groups]),
        edges=np.array(edges), scale=s_fac)


def plot_reliability(ax, curve: ReliabilityCurve, label: str | None = None,
                     diagonal: bool = True, **kwargs):
    """Draw a reliability diagram on matplotlib axes ``ax``: observed vs predicted RMS error
    (eV/Å, log-log) of ``curve`` (from :func:`reliability_curve`), with the y = x line of
    perfect calibration; ``kwargs`` go to ``ax.plot``. Returns ``ax``."""
    ax.plot(curve.predicted, curve.observed, "o-", label=label, **kwargs)
    if diagonal:
        values = np.concatenate([curve.predicted, curve.observed])
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            lo, hi = values.min(), values.max()
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="calibrated")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted RMS force error s·σ (eV/Å)")
    ax.set_ylabel("observed RMS force error (eV/Å)")
    if label is not None:
        ax.legend()
    return ax


def fresh_label_record(member_forces, true_forces, previous: Calibration | None = None,
                       alpha: float = 0.1, meta: dict | None = None
                       ) -> tuple[Calibration, dict]:
    """A committee's calibration from labels it never trained on, and what the loop reports.

    member_forces [M, n, 3] (eV/Å): the committee's forces on the fresh structures' atoms;
    true_forces [n, 3] (eV/Å): their labels; previous: the calibration of the committee
    before it (fitted on the labels *it* proposed), checked here out of sample on these
    pairs, as a user applying yesterday's calibration to today's committee would. Returns
    (the per-atom calibration fitted on these pairs, a JSON-ready record with "type":
    "calibration": n, scale, q, alpha, spearman (ρ of σ_i and e_i), in-sample
    miscalibration_area, and, when ``previous`` is given, transfer_coverage (fraction of e_i
    under previous.bound(σ_i), target 1 − α), transfer_miscalibration_area and
    transfer_scale; reliability: :func:`reliability_curve` with the previous scale when there
    is one, else with the new one).
    """
    sigma, _ = committee_sigma(member_forces)
    error, _ = force_errors(member_forces, true_forces)
    calibration = Calibration.fit(sigma, error, alpha=alpha, meta=meta)
    record = {"type": "calibration", "n": calibration.n, "scale": calibration.scale,
              "q": _float_or_none(calibration.q), "alpha": alpha,
              "spearman": spearman(sigma, error),
              "miscalibration_area": miscalibration_area(sigma, error, calibration.scale)}
    reference = calibration
    if previous is not None:
        checked = previous.evaluate(sigma, error)
        record.update(transfer_coverage=checked["coverage"],
                      transfer_miscalibration_area=checked["miscalibration_area"],
                      transfer_scale=previous.scale)
        reference = previous
    record["reliability"] = reliability_curve(sigma, error, bins=min(10, max(1, sigma.size // 5)),
                                              scale=reference).as_dict()
    return calibration, record


def plot(entries: list[tuple[int, dict]], ax_trend, ax_reliability) -> None:
    """The report's panels: ρ(σ, error) and the transferred bound's coverage per committee
    generation; the last reliability diagram (expected vs observed RMS error)."""
    gens = [g for g, _ in entries]
    ax_trend.plot(gens, [m["spearman"] for _, m in entries], "o-", label="ρ(σ, error), fresh")
    covered = [(g, m["transfer_coverage"]) for g, m in entries if "transfer_coverage" in m]
    if covered:
        ax_trend.plot(*zip(*covered), "s--", label="coverage of last bound")
        ax_trend.axhline(1 - entries[-1][1]["alpha"], color="grey", ls=":", lw=1)
    ax_trend.set_ylim(-1.05, 1.05)
    ax_trend.set_xlabel("committee generation")
    ax_trend.legend(fontsize=7)
    g, last = entries[-1]
    curve = ReliabilityCurve(**{k: (np.asarray(v) if isinstance(v, list) else v)
                                for k, v in last["reliability"].items()})
    plot_reliability(ax_reliability, curve, label=f"committee {g} on its fresh labels, "
                     f"s = {curve.scale:.3g}" + (f" (committee {g - 1}'s)"
                                                 if "transfer_scale" in last else ""))
    ax_reliability.legend(fontsize=7)
