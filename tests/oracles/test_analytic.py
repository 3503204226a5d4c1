import numpy as np
import pytest

from advsample.oracles.analytic import DoubleWell1D, DoubleWell2D


@pytest.mark.parametrize("surface", [DoubleWell2D(), DoubleWell1D()])
def test_forces_are_minus_finite_difference_gradient(surface):
    x = np.random.default_rng(1).uniform(-1.2, 1.2, size=(20, surface.dim))
    _, forces = surface.evaluate(x)
    h = 1e-6
    for j in range(surface.dim):
        dx = np.zeros_like(x)
        dx[:, j] = h
        fd = (surface.energy(x + dx) - surface.energy(x - dx)) / (2 * h)
        np.testing.assert_allclose(forces[:, j], -fd, rtol=1e-6, atol=1e-6)


def test_double_well_landmarks():
    s = DoubleWell2D()
    left = s.energy(np.array([[-0.7541, 0.0]]))[0]
    right = s.energy(np.array([[0.6514, 0.0]]))[0]
    assert left == pytest.approx(-3.96, abs=0.01)
    assert right == pytest.approx(-1.14, abs=0.01)
    assert s.max_energy_in_box() == pytest.approx(17.03, abs=0.01)  # corner (1.2, ±1.2)
