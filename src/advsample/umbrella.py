"""The umbrella (inversion) coordinate of AX3 molecules such as NH3, and the inversion path.

The umbrella coordinate h is the signed distance (Å) of the central atom from the plane of
its three ligands, positive on the side the ligands' normal n = (r2 − r1) × (r3 − r1) points
to. Inversion flips its sign; the planar transition state has h = 0.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms


def umbrella_coordinate(positions: np.ndarray) -> np.ndarray:
    """positions [..., 4, 3] (centre first, then three ligands) -> h [...] (Å)."""
    p = np.asarray(positions, dtype=float)
    c, a, b, d = p[..., 0, :], p[..., 1, :], p[..., 2, :], p[..., 3, :]
    normal = np.cross(b - a, d - a)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return np.sum((c - (a + b + d) / 3) * normal, axis=-1)


def inversion_path(minimum: Atoms, planar: Atoms, n_points: int = 21) -> list[Atoms]:
    """Geometries from the pyramidal minimum through the planar state to the mirror minimum.

    Each ligand's bond vector is interpolated so that h goes linearly from h_min to −h_min
    while the bond length goes from the minimum's to the planar state's and back.
    """
    centre = minimum.positions[0]
    bonds = minimum.positions[1:] - centre
    h0 = umbrella_coordinate(minimum.positions)
    axis = np.cross(bonds[1] - bonds[0], bonds[2] - bonds[0])
    axis /= np.linalg.norm(axis)
    r_min = np.linalg.norm(bonds, axis=1).mean()
    r_ts = np.linalg.norm(planar.positions[1:] - planar.positions[0], axis=1).mean()
    in_plane = bonds + np.outer(bonds @ axis * -1, axis)
    in_plane /= np.linalg.norm(in_plane, axis=1, keepdims=True)
    path = []
    for t in np.linspace(-1.0, 1.0, n_points):
        h = h0 * -t  # +h0 (minimum) at t = -1, 0 at t = 0, -h0 at t = 1
        r = r_ts + (r_min - r_ts) * abs(t)
        # ligand k at distance r, height -h along the axis relative to the centre
        along = -h
        radial = np.sqrt(max(r**2 - along**2, 0.0))
        pos = np.vstack([centre, centre + radial * in_plane + along * axis])
        path.append(Atoms(minimum.numbers, positions=pos))
    return path


def barrier(energies: np.ndarray) -> float:
    """Inversion barrier (eV) from energies along the path: the middle minus the end mean."""
    e = np.asarray(energies, dtype=float)
    return float(e[len(e) // 2] - 0.5 * (e[0] + e[-1]))
