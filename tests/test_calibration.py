"""Calibration of the committee's σ against true force errors: the statistics are right."""

import json
import math

import numpy as np
import pytest
import torch

from advsample.calibration import (
    Calibration,
    committee_sigma,
    conformal_quantile,
    coverage,
    force_errors,
    miscalibration_area,
    reliability_curve,
    spearman,
)

S_TRUE = 2.5


def synthetic(n: int, seed: int, s_true: float = S_TRUE):
    """σ_i log-uniform on [0.01, 1] eV/Å; error components ~ N(0, (s_true σ_i)²); returns
    (σ [n], e [n]) with e the RMS over the 3 components."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(1.0), n))
    components = rng.normal(0.0, 1.0, (n, 3)) * s_true * sigma[:, None]
    return sigma, np.sqrt((components ** 2).mean(axis=1))


def test_scale_and_power_law_recover_the_generating_model():
    from scipy import stats

    sigma, error = synthetic(20000, seed=1)
    cal = Calibration.fit(sigma, error)
    assert cal.n == 20000 and cal.level == "atom"
    assert cal.scale == pytest.approx(S_TRUE, rel=0.02)
    # e = s·σ·χ₃/√3 exactly, so log e = log σ + log s + log(χ₃/√3): b = 1 and
    # a = s·exp(E[log χ₃])/√3 (geometric mean), computed here by quadrature of the chi pdf
    geometric = math.exp(stats.chi(3).expect(np.log)) / math.sqrt(3)
    assert cal.b == pytest.approx(1.0, abs=0.02)
    assert cal.a == pytest.approx(S_TRUE * geometric, rel=0.03)
    assert cal.expected_error(0.2) == pytest.approx(cal.scale * 0.2)
    assert cal.power_law(0.2) == pytest.approx(cal.a * 0.2 ** cal.b)
    # expected_error is the RMS error: mean of e² / (s σ)² is 1
    assert np.mean(error ** 2 / cal.expected_error(sigma) ** 2) == pytest.approx(1.0, rel=0.03)


def test_scale_is_wrong_if_fitted_naively_on_components_vs_rms():
    """A mis-derived MLE (e.g. s² = 3·mean(e²/σ²), treating e as one component) is caught."""
    sigma, error = synthetic(20000, seed=2, s_true=1.0)
    cal = Calibration.fit(sigma, error)
    assert cal.scale == pytest.approx(1.0, rel=0.02)
    assert abs(cal.scale - math.sqrt(3)) > 0.5


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_conformal_bound_covers_held_out_errors(alpha):
    from scipy import stats

    sigma, error = synthetic(20000, seed=3)
    cal = Calibration.fit(sigma[:10000], error[:10000], alpha=alpha)
    assert cal.alpha == alpha
    # q against the exact quantile of e/σ = s·sqrt(χ²₃/3)
    exact = S_TRUE * math.sqrt(stats.chi2(3).ppf(1 - alpha) / 3)
    assert cal.q == pytest.approx(exact, rel=0.03)
    held = coverage(cal.bound(sigma[10000:]), error[10000:])
    assert held == pytest.approx(1 - alpha, abs=0.02)
    assert coverage(cal.bound(sigma[:10000]), error[:10000]) >= 1 - alpha


def test_conformal_quantile_is_the_finite_sample_order_statistic():
    scores = np.arange(1.0, 10.0)  # n = 9
    assert conformal_quantile(scores, 0.1) == 9.0  # ceil(10·0.9) = 9, no round-off to 10
    assert conformal_quantile(scores, 0.2) == 8.0  # ceil(10·0.8) = 8
    assert conformal_quantile(scores, 0.5) == 5.0  # ceil(5) = 5
    assert math.isinf(conformal_quantile(scores[:5], 0.1))  # ceil(6·0.9) = 6 > 5
    with pytest.raises(ValueError):
        conformal_quantile(scores, 1.0)


def test_finite_sample_coverage_guarantee_over_many_small_calibration_sets():
    """For continuous scores a fresh point is covered with probability k/(n+1) exactly,
    k = ceil((n+1)(1−α)): 14/15 for n = 14, α = 0.1 (a plain 90 % quantile of the n scores,
    k = ceil(n(1−α)) = 13, would cover only 13/15 < 0.9)."""
    rng = np.random.default_rng(4)
    n, alpha, trials = 14, 0.1, 4000
    sigma = np.exp(rng.uniform(-3, 0, (trials, n + 1)))
    error = sigma * np.abs(rng.standard_t(3, (trials, n + 1)))  # heavy-tailed, not Gaussian
    hits = [coverage(Calibration.fit(s[:n], e[:n], alpha=alpha).bound(s[n]), e[n])
            for s, e in zip(sigma, error)]
    assert np.mean(hits) == pytest.approx(14 / 15, abs=0.015)


def test_spearman_matches_scipy_with_ties():
    from scipy import stats

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=300), rng.normal(size=300)
    b = a + b
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
    x, y = rng.integers(0, 5, 60), rng.integers(0, 4, 60)  # many ties
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(
        0.5)


def test_miscalibration_area_is_small_when_calibrated_and_large_when_not():
    sigma, error = synthetic(20000, seed=6)
    assert miscalibration_area(sigma, error, S_TRUE) < 0.01
    too_confident = miscalibration_area(sigma, error, S_TRUE / 3)
    too_cautious = miscalibration_area(sigma, error, S_TRUE * 3)
    assert too_confident > 0.25 and too_cautious > 0.25
    # exact value for a hand-made case: one point with u = 0.5 gives ∫|F − p| = 1/4
    from scipy import stats

    z = stats.chi(3).ppf(0.5)
    assert miscalibration_area([1.0], [z / math.sqrt(3)], 1.0) == pytest.approx(0.25)
    # single components: dof = 1, |z| half-normal
    comp = np.abs(np.random.default_rng(7).normal(0, 2.0, 20000))
    assert miscalibration_area(np.ones(20000), comp, 2.0, dof=1) < 0.01
    assert miscalibration_area(np.ones(20000), comp, 2.0, dof=3) > 0.05


def test_reliability_curve_lies_on_the_diagonal_when_calibrated():
    sigma, error = synthetic(20000, seed=8)
    cal = Calibration.fit(sigma, error)
    curve = reliability_curve(sigma, error, bins=10, scale=cal)
    assert curve.count.sum() == 20000 and len(curve.count) == 10
    assert np.all(np.diff(curve.sigma) > 0)
    np.testing.assert_allclose(curve.observed, curve.predicted, rtol=0.06)
    off = reliability_curve(sigma, error, bins=10, scale=3 * cal.scale)
    np.testing.assert_allclose(off.predicted / off.observed, 3.0, rtol=0.1)
    json.dumps(curve.as_dict())


def test_plot_reliability_draws(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advsample.calibration import plot_reliability

    sigma, error = synthetic(500, seed=9)
    fig, ax = plt.subplots()
    plot_reliability(ax, reliability_curve(sigma, error, scale=S_TRUE), label="gen 1")
    fig.savefig(tmp_path / "r.png")
    plt.close(fig)
    assert (tmp_path / "r.png").stat().st_size > 0


def test_force_errors_and_sigma_per_atom_and_structure():
    rng = np.random.default_rng(10)
    members = rng.normal(size=(4, 5, 3))
    true = rng.normal(size=(5, 3))
    structure = np.array([0, 0, 0, 1, 1])
    atom, per_structure = force_errors(torch.tensor(members), true, structure, 2)
    diff = members.mean(0) - true
    np.testing.assert_allclose(atom, np.sqrt((diff ** 2).mean(1)))
    np.testing.assert_allclose(per_structure, [np.sqrt((diff[:3] ** 2).mean()),
                                               np.sqrt((diff[3:] ** 2).mean())])
    atom_mean, _ = force_errors(members.mean(0), true, structure, 2)
    np.testing.assert_allclose(atom_mean, atom)
    s_atom, s_structure = committee_sigma(members, structure, 2)
    from advsample.uncertainty import atom_force_variance, force_variance

    np.testing.assert_allclose(s_atom ** 2, atom_force_variance(torch.tensor(members)))
    np.testing.assert_allclose(s_structure ** 2, force_variance(
        torch.tensor(members), torch.tensor(structure), 2))
    with pytest.raises(ValueError):
        force_errors(members, true[:4])


def test_structure_level_scale_weights_by_atoms():
    """Per structure, 3·n_S·e_S²/(sσ_S)² ~ χ²_{3 n_S}: the weighted MLE recovers s."""
    rng = np.random.default_rng(11)
    n_atoms = rng.integers(1, 30, 4000)
    sigma = np.exp(rng.uniform(-4, 0, 4000))
    error = sigma * 1.7 * np.sqrt(rng.chisquare(3 * n_atoms) / (3 * n_atoms))
    cal = Calibration.fit(sigma, error, level="structure", weights=n_atoms)
    assert cal.level == "structure" and cal.scale == pytest.approx(1.7, rel=0.02)
    assert cal.evaluate(sigma, error, weights=n_atoms)["miscalibration_area"] < 0.02


def test_round_trip_through_dict_and_json(tmp_path):
    sigma, error = synthetic(300, seed=12)
    cal = Calibration.fit(sigma, error, alpha=0.2, recommended_bound=0.5,
                          meta={"generation": 3})
    text = json.dumps(cal.as_dict())
    back = Calibration.from_dict(json.loads(text))
    assert back == cal
    cal.save(tmp_path / "sub" / "calibration.json")
    assert Calibration.load(tmp_path / "sub" / "calibration.json") == cal
    tiny = Calibration.fit([0.1, 0.2], [0.1, 0.3])  # q = ∞: too few points for 90 %
    d = tiny.as_dict()
    assert d["q"] is None and json.loads(json.dumps(d), parse_constant=pytest.fail)
    assert math.isinf(Calibration.from_dict(d).q) and math.isinf(tiny.bound(0.3))
    bad = tmp_path / "bad.json"
    bad.write_text('{"scale": 1.0}')
    with pytest.raises(ValueError, match="bad.json"):
        Calibration.load(bad)
    with pytest.raises(FileNotFoundError):
        Calibration.load(tmp_path / "none.json")


def test_fit_rejects_bad_input_and_handles_zero_sigma():
    with pytest.raises(ValueError):
        Calibration.fit([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        Calibration.fit([0.1, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError):
        Calibration.fit([], [])
    with pytest.raises(ValueError):
        Calibration.fit([0.1], [0.1], level="molecule")
    cal = Calibration.fit([0.0, 0.0, 0.1, 0.2], [0.0, 0.0, 0.1, 0.2], alpha=0.5)
    assert cal.scale == pytest.approx(1.0) and cal.q == pytest.approx(1.0)
    cal = Calibration.fit([0.0, 0.1, 0.2], [0.5, 0.1, 0.2], alpha=0.3)
    assert math.isinf(cal.q)  # an error where the committee agrees exactly is unbounded
