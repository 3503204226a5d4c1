"""Conformers of a flexible molecule: a committee against a relaxed two-dihedral reference scan.

The reference is a grid of oracle-labelled structures relaxed with two dihedrals (φ, ψ) held
at the grid values (e.g. alanine dipeptide's Ramachandran scan,
``benchmarks/alanine_reference.py``). Its basins are the grid's periodic local minima within
``window_eV`` of the lowest point, found from the grid itself. A generation is judged by how
many of those basins hold a labelled training structure and by the committee's energy and
force errors on the grid points within the window. Angles are in degrees in [-180, 180).

A structure holds a basin when its φ and ψ are near the basin's and its oracle energy is no
higher than a thermal structure of that conformer would be: at most ``thermal_ceiling``
above the basin's relaxed energy. Angles alone are not enough: a labelled structure torn
apart 20 eV above the minimum can have C7ax's φ and ψ without being a C7ax conformer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advsample.evaluators.predictions import predict
from advsample.structures import Batch

_NEIGHBOURS = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
BOLTZMANN_EV_PER_K = 8.617333262e-5


def thermal_ceiling(n_atoms: int, temperature_K: float, sigmas: float = 4.0) -> float:
    """Highest potential energy above its minimum (eV) expected of a thermal frame of an
    ``n_atoms`` molecule at ``temperature_K``: in the harmonic approximation the potential
    energy of n = 3N - 6 vibrational modes is Gamma-distributed with shape n/2 and scale kT
    (mean n kT / 2, standard deviation sqrt(n / 2) kT); the ceiling is the mean plus
    ``sigmas`` standard deviations (22 atoms at 300 K: 0.78 + 4 x 0.14 = 1.34 eV)."""
    modes = max(3 * n_atoms - 6, 1)
    kT = BOLTZMANN_EV_PER_K * temperature_K
    return (modes / 2 + sigmas * np.sqrt(modes / 2)) * kT


def basin_counts(angles, energies, basins, radius_deg: float,
                 ceiling_eV: float | None) -> np.ndarray:
    """Structures [n_b] holding each basin: (φ, ψ) ``angles`` [K, 2] (degrees) both within
    ``radius_deg`` of the basin's and ``energies`` [K] (eV above the grid's lowest point) at
    most ``ceiling_eV`` above the basin's (None: angles only); ``basins`` [n_b, 3] as
    ``ConformerEvaluator.basins``."""
    basins = np.asarray(basins, dtype=float).reshape(-1, 3)
    angles = np.asarray(angles, dtype=float).reshape(-1, 2)
    near = np.abs(angle_difference(angles[None, :, :], basins[:, None, :2]))
    inside = (near <= radius_deg).all(axis=2)  # [n_b, K]
    if ceiling_eV is not None:
        energies = np.asarray(energies, dtype=float).reshape(1, -1)
        inside &= energies <= basins[:, 2:3] + ceiling_eV
    return inside.sum(axis=1)


def _wrap(degrees):
    """Angles (degrees, any shape) wrapped to [-180, 180)."""
    return (np.asarray(degrees, dtype=float) + 180.0) % 360.0 - 180.0


def _dihedral_of_points(p: np.ndarray) -> np.ndarray:
    """Dihedral (degrees, [-180, 180)) of points p [..., 4, 3] (ASE's sign convention)."""
    b0 = p[..., 0, :] - p[..., 1, :]
    b1 = p[..., 2, :] - p[..., 1, :]
    b2 = p[..., 3, :] - p[..., 2, :]
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1n).sum(-1, keepdims=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdims=True) * b1n
    x = (v * w).sum(-1)
    y = (np.cross(b1n, v) * w).sum(-1)
    return _wrap(np.degrees(np.arctan2(y, x)))


def dihedral_angles(positions, quadruples) -> np.ndarray:
    """Dihedrals (degrees, [-180, 180)) of atom quadruples, batched over frames.

    positions: [..., N, 3] (Å; numpy or torch, e.g. [F, N, 3] for F frames of one molecule);
    quadruples: [Q, 4] atom indices (or one quadruple [4]). Returns [..., Q] (or [...] for
    one quadruple). Same sign as ``ase.Atoms.get_dihedral``, which returns 0..360.
    """
    if hasattr(positions, "detach"):
        positions = positions.detach().cpu().numpy()
    pos = np.asarray(positions, dtype=float)
    quads = np.asarray(quadruples, dtype=int)
    return _dihedral_of_points(pos[..., quads, :])  # [..., Q, 4, 3] -> [..., Q]


def grid_minima(energy, periodic: bool = True) -> np.ndarray:
    """Local minima of a 2D grid: points strictly lower than all 8 neighbours.

    energy: [n_phi, n_psi]; ``periodic`` wraps the edges around (angles), otherwise points
    off the grid do not count as neighbours. Returns int [K, 2] grid indices (i, j), lowest
    energy first.
    """
    e = np.asarray(energy, dtype=float)
    if periodic:
        shifted = [np.roll(e, s, axis=(0, 1)) for s in _NEIGHBOURS]
    else:
        pad = np.pad(e, 1, constant_values=np.inf)
        n, m = e.shape
        shifted = [pad[1 - a:1 - a + n, 1 - b:1 - b + m] for a, b in _NEIGHBOURS]
    lower = np.all([e < s for s in shifted], axis=0)
    idx = np.argwhere(lower)
    return idx[np.argsort(e[lower], kind="stable")]


def angle_difference(a, b) -> np.ndarray:
    """Periodic difference a - b of angles (degrees, broadcast), in [-180, 180)."""
    return _wrap(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))


def load_grid(path: str | Path) -> list:
    """Labelled grid structures of an extxyz file, each with info "phi" and "psi" (degrees);
    validated like a test set (errors name the file and frame)."""
    from advsample.evaluators.test_set import load_test_set

    frames = load_test_set(path)
    missing = [k for k, a in enumerate(frames) if "phi" not in a.info or "psi" not in a.info]
    if missing:
        raise ValueError(f"{path}: frame {missing[0]} has no info 'phi'/'psi' (degrees)")
    return frames


def _grid_layout(frames: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted φ axis [n_phi], ψ axis [n_psi] (degrees) and, per frame, its flat grid index
    i * n_psi + j [P]; raises unless the frames fill the grid exactly once."""
    phi = _wrap([a.info["phi"] for a in frames])
    psi = _wrap([a.info["psi"] for a in frames])
    phi_axis, i = np.unique(np.round(phi, 6), return_inverse=True)
    psi_axis, j = np.unique(np.round(psi, 6), return_inverse=True)
    flat = i * len(psi_axis) + j
    if len(frames) != len(phi_axis) * len(psi_axis) or len(np.unique(flat)) != len(frames):
        raise ValueError(f"conformer grid: {len(frames)} structures do not fill a "
                         f"{len(phi_axis)} x {len(psi_axis)} (phi, psi) grid once")
    return phi_axis, psi_axis, flat


def _full_circle(axis: np.ndarray) -> bool:
    """Whether sorted angles [n] (degrees) are evenly spaced round the whole circle."""
    return len(axis) > 2 and bool(np.allclose(np.diff(axis), 360.0 / len(axis)))


@dataclass
class ConformerEvaluator:
    """Basins of a relaxed (φ, ψ) reference scan reached by training data; committee errors.

    grid: ase.Atoms with oracle energy (eV) and forces (eV/Å) and info "phi", "psi" (degrees),
    filling a regular grid (any order; minima are found with wrap-around when both axes
    span the circle evenly, e.g. every 20° from -180°); phi, psi: the 4 atom indices of each
    dihedral; window_eV: grid points and basins within this of the grid's lowest point count;
    basin_radius_deg: a training structure is in a basin when both its φ and ψ are within this
    of the basin's (periodic difference) and its energy at most ``thermal_ceiling`` of the
    molecule at ``basin_temperature_K`` above the basin's (None: angles only). Training
    structures with another composition than the grid's are ignored.
    """

    grid: list
    phi: list
    psi: list
    name: str = "conformers"
    window_eV: float = 0.4
    basin_radius_deg: float = 30.0
    basin_temperature_K: float | None = 300.0
    type: str = "conformers"
    _layout: tuple | None = field(default=None, init=False, repr=False)
    lowest_energy: float = field(default=0.0, init=False)  # the grid's lowest oracle E (eV)

    def __post_init__(self):
        """Check the arguments; lay out the grid, its energy map [n_phi, n_psi] (eV above the
        lowest point) and the basins (grid minima within the window) once."""
        if len(self.phi) != 4 or len(self.psi) != 4:
            raise ValueError("conformers: 'phi' and 'psi' need 4 atom indices each")
        if self.window_eV <= 0 or self.basin_radius_deg <= 0:
            raise ValueError("conformers: window_eV and basin_radius_deg must be positive")
        if self.basin_temperature_K is not None and self.basin_temperature_K <= 0:
            raise ValueError("conformers: basin_temperature_K must be positive (or null)")
        phi_axis, psi_axis, flat = _grid_layout(self.grid)
        energy = np.array([a.get_potential_energy() for a in self.grid])
        emap = np.empty(len(phi_axis) * len(psi_axis))
        emap[flat] = energy - energy.min()
        emap = emap.reshape(len(phi_axis), len(psi_axis))  # [n_phi, n_psi] eV above minimum
        minima = grid_minima(emap, periodic=_full_circle(phi_axis) and _full_circle(psi_axis))
        minima = minima[emap[minima[:, 0], minima[:, 1]] <= self.window_eV]
        self._layout = (phi_axis, psi_axis, flat, emap, minima)
        self.lowest_energy = float(energy.min())

    @property
    def basin_energy_eV(self) -> float | None:
        """How far above its basin's relaxed energy a structure may be and still hold the
        basin (eV; None: no energy condition)."""
        if self.basin_temperature_K is None:
            return None
        return float(thermal_ceiling(len(self.grid[0]), self.basin_temperature_K))

    def count_basins(self, angles, energies) -> np.ndarray:
        """Structures [n_b] holding each basin, from their (φ, ψ) [K, 2] (degrees) and oracle
        energies [K] (eV, same oracle and molecule as the grid)."""
        return basin_counts(angles, np.asarray(energies, dtype=float) - self.lowest_energy,
                            self.basins, self.basin_radius_deg, self.basin_energy_eV)

    @property
    def basins(self) -> list[list[float]]:
        """Reference basins within the window: [φ (deg), ψ (deg), E − E_min (eV)], lowest
        first."""
        phi_axis, psi_axis, _, emap, minima = self._layout
        return [[float(phi_axis[i]), float(psi_axis[j]), float(emap[i, j])] for i, j in minima]

    def training_angles(self, batch: Batch) -> np.ndarray:
        """(φ, ψ) [K, 2] (degrees) of the structures of ``batch`` with the grid's composition
        (atomic numbers in the same order); others are left out."""
        n = len(self.grid[0])
        start = batch.offsets[:-1].cpu().numpy()[_composition_mask(batch, self.grid[0].numbers)]
        positions = batch.positions.detach().cpu().numpy()[start[:, None] + np.arange(n)]
        return dihedral_angles(positions, [self.phi, self.psi]).reshape(-1, 2)  # [K, 2]

    def evaluate(self, context) -> dict:
        """Metrics of ``context.committee`` and ``context.training`` (``loop.EvaluationContext``).

        basins [n_b, 3] (φ, ψ in degrees, E − E_min in eV) within the window; basins_visited /
        fraction_basins_visited and basin_counts [n_b] (training structures holding each:
        ``count_basins``), basin_energy_eV (its energy condition); energy_rmse / energy_mae
        (eV) of E − E(min point), committee mean against oracle, over the grid points within
        the window (window_points of them), forces_rmse (eV/Å, components) on those
        geometries; for the plots: phi_axis [n_phi], psi_axis [n_psi], reference
        [n_phi][n_psi] (E − E_min, eV), errors [n_phi][n_psi] (committee minus oracle of
        E − E(min point), eV, the whole grid) and
        training_phi_psi [K, 2] (degrees) of the training structures with their generation
        [K]; seconds (wall time, s).
        """
        start = time.perf_counter()
        phi_axis, psi_axis, flat, emap, minima = self._layout
        data = Batch.from_atoms(self.grid).to(device=context.device)
        pred = predict(context.committee, data)
        ref = data.energy.cpu().numpy()
        lowest = int(np.argmin(ref))
        de = (pred.energy - pred.energy[lowest]) - (ref - ref[lowest])  # [P] eV
        inside = emap.reshape(-1)[flat] <= self.window_eV  # [P]
        atom_inside = inside[data.structure.cpu().numpy()]  # [N]
        df = pred.forces[atom_inside] - data.forces.cpu().numpy()[atom_inside]
        errors = np.full(emap.size, np.nan)
        errors[flat] = de

        angles = self.training_angles(context.training)  # [K, 2]
        gens = np.asarray(context.training_generation)
        same = _composition_mask(context.training, self.grid[0].numbers)
        if context.training.energy is None and self.basin_temperature_K is not None:
            raise ValueError("conformers: the training structures need oracle energies "
                             "(or basin_temperature_K: null)")
        energies = (np.zeros(len(angles)) if context.training.energy is None
                    else context.training.energy.cpu().numpy()[same])
        counts = self.count_basins(angles, energies)  # [n_b]
        visited = int((counts > 0).sum())
        return {"type": self.type, "basins": self.basins, "basins_visited": visited,
                "basins_total": len(minima),
                "fraction_basins_visited": visited / len(minima) if len(minima) else 0.0,
                "basin_counts": counts.tolist(),
                "energy_rmse": float(np.sqrt(np.mean(de[inside] ** 2))),
                "energy_mae": float(np.mean(np.abs(de[inside]))),
                "forces_rmse": float(np.sqrt(np.mean(df**2))),
                "window_points": int(inside.sum()), "window_eV": self.window_eV,
                "basin_radius_deg": self.basin_radius_deg,
                "basin_energy_eV": self.basin_energy_eV,
                "phi_axis": phi_axis.tolist(), "psi_axis": psi_axis.tolist(),
                "reference": emap.tolist(), "errors": errors.reshape(emap.shape).tolist(),
                "training_phi_psi": angles.tolist(), "training_generation": gens[same].tolist(),
                "seconds": time.perf_counter() - start}


def _composition_mask(batch: Batch, numbers: np.ndarray) -> np.ndarray:
    """Bool [B]: the structures of ``batch`` whose atomic numbers equal ``numbers`` [n]."""
    n_atoms = batch.n_atoms.cpu().numpy()
    start = batch.offsets[:-1].cpu().numpy()
    mask = n_atoms == len(numbers)
    idx = start[mask][:, None] + np.arange(len(numbers))
    mask[mask] = (batch.numbers.cpu().numpy()[idx] == numbers).all(axis=1)
    return mask


# ---------------------------------------------------------------------------- plots
def _periodic_map(phi_axis, psi_axis, values):
    """Axes and values [n_psi + 1, n_phi + 1] (ψ rows, φ columns, for contour plots) with the
    first row and column repeated at +360°, so a regular periodic grid spans its whole box."""
    phi = np.append(phi_axis, phi_axis[0] + 360.0)
    psi = np.append(psi_axis, psi_axis[0] + 360.0)
    v = np.asarray(values, dtype=float)
    v = np.concatenate([v, v[:1]], axis=0)
    v = np.concatenate([v, v[:, :1]], axis=1)
    return phi, psi, v.T


def _reference_panel(ax, phi_axis, psi_axis, reference, window, basins, points=None,
                     colours=None, title=None, hot=None):
    """Reference map E − E_min (eV, filled contours up to ``window``) on ``ax``, with basins
    [n_b, 3] as labelled crosses, ``points`` [K, 2] (degrees) as dots and ``hot`` [H, 2]
    (degrees: structures above a thermal energy) as black pluses."""
    phi, psi, v = _periodic_map(phi_axis, psi_axis, reference)
    levels = np.linspace(0.0, window, 17)
    cs = ax.contourf(phi, psi, np.clip(v, 0.0, window), levels=levels, cmap="viridis",
                     extend="max")
    ax.figure.colorbar(cs, ax=ax, label="reference E − E_min (eV)")
    if points is not None and len(points):
        p = np.asarray(points, dtype=float)
        style = {"c": "white"} if colours is None else {"c": colours, "cmap": "autumn"}
        ax.scatter(p[:, 0], p[:, 1], s=9, edgecolors="k", linewidths=0.3, zorder=5, **style)
    if hot is not None and len(hot):
        ax.scatter(hot[:, 0], hot[:, 1], s=14, marker="+", c="k", linewidths=0.8, zorder=5)
    for b_phi, b_psi, b_e in basins:  # on the box's lower edges also at their +360° image
        for x in (b_phi, b_phi + 360.0) if b_phi == phi_axis[0] else (b_phi,):
            for y in (b_psi, b_psi + 360.0) if b_psi == psi_axis[0] else (b_psi,):
                ax.plot(x, y, "x", color="red", ms=9, mew=2, zorder=4, clip_on=False)
                ax.annotate(f"{b_e:.2f}", (x, y), xytext=(4, 4), textcoords="offset points",
                            color="red", fontsize=7, annotation_clip=True)
    _angle_axes(ax, phi_axis, psi_axis)
    if title:
        ax.set_title(title, fontsize=9)


def _angle_axes(ax, phi_axis, psi_axis):
    """φ/ψ axes over the grid's periodic box (degrees), ticks every 90°."""
    ax.set_xlim(phi_axis[0], phi_axis[0] + 360.0)
    ax.set_ylim(psi_axis[0], psi_axis[0] + 360.0)
    ax.set_xticks(np.arange(-180, 181, 90))
    ax.set_yticks(np.arange(-180, 181, 90))
    ax.set_xlabel("φ (degrees)")
    ax.set_ylabel("ψ (degrees)")
    ax.set_aspect("equal")


def plot(entries: list[tuple[int, dict]], ax_map, ax_curve) -> None:
    """Ramachandran map of the reference with the last generation's training structures
    (coloured by generation) and the basins; energy RMSE and fraction of basins visited per
    generation."""
    g, last = entries[-1]
    points = np.array(last["training_phi_psi"], dtype=float).reshape(-1, 2)
    _reference_panel(ax_map, np.array(last["phi_axis"]), np.array(last["psi_axis"]),
                     last["reference"], last["window_eV"], last["basins"], points,
                     np.array(last["training_generation"]) if len(points) else None,
                     f"generation {g}: {last['basins_visited']} of {last['basins_total']} "
                     "basins visited")
    gens = [e[0] for e in entries]
    ax_curve.plot(gens, [m["energy_rmse"] for _, m in entries], "o-",
                  label="energy RMSE in window (eV)")
    ax_curve.set_xlabel("generation")
    ax_curve.set_ylabel("energy RMSE (eV)")
    ax_curve.set_yscale("log")
    twin = ax_curve.twinx()
    twin.plot(gens, [m["fraction_basins_visited"] for _, m in entries], "s--",
              color="tab:red")
    twin.set_ylabel("fraction of basins visited", color="tab:red")
    twin.set_ylim(-0.05, 1.05)
    ax_curve.legend(fontsize=7)


def ramachandran_figure(grid_frames: list, quadruples, labelled_phi_psi, errors,
                        path: str | Path, title: str | None = None,
                        window_eV: float = 0.4) -> Path:
    """Save a two-panel figure to ``path``: the reference map (E − E_min, eV) with the labelled
    structures and basins, and the committee's energy-error map (eV) side by side.

    grid_frames: the reference grid (as for :class:`ConformerEvaluator`); quadruples: the φ
    and ψ atom indices [2, 4]; labelled_phi_psi: (φ, ψ) [K, 2] in degrees, or a list of
    ase.Atoms whose angles are computed with ``quadruples`` (labelled Atoms, same oracle as
    the grid: those more than the judge's thermal ceiling above the window's top are drawn
    apart, as black pluses: distorted or torn, holding no basin); errors: committee minus oracle
    of E − E(min point) (eV), either [n_phi, n_psi] over the sorted axes (``evaluate()``'s
    "errors") or [P] in the order of ``grid_frames``; None leaves the error panel empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluator = ConformerEvaluator(grid_frames, list(quadruples[0]), list(quadruples[1]),
                                   window_eV=window_eV)
    phi_axis, psi_axis, flat, emap, _ = evaluator._layout
    points, hot, atoms = labelled_phi_psi, None, labelled_phi_psi
    if len(points) and hasattr(points[0], "positions"):
        points = dihedral_angles(np.stack([a.positions for a in atoms]), quadruples)
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    panel = f"reference and {len(points)} labelled structures"
    if len(points) and getattr(atoms[0], "calc", None) is not None:
        energy = np.array([a.get_potential_energy() for a in atoms])
        energy -= evaluator.lowest_energy  # [K] eV above the grid's lowest point
        above = energy > window_eV + evaluator.basin_energy_eV
        points, hot = points[~above], points[above]
        panel += (f"\n(+: {int(above.sum())} more than "
                  f"{window_eV + evaluator.basin_energy_eV:.2f} eV above the minimum)")
    fig, (ax_ref, ax_err) = plt.subplots(1, 2, figsize=(11, 4.6))
    _reference_panel(ax_ref, phi_axis, psi_axis, emap, window_eV, evaluator.basins, points,
                     title=panel, hot=hot)
    if errors is not None:
        err = np.asarray(errors, dtype=float)
        if err.ndim == 1:
            flat_err = np.full(emap.size, np.nan)
            flat_err[flat] = err
            err = flat_err.reshape(emap.shape)
        phi, psi, v = _periodic_map(phi_axis, psi_axis, err)
        inside = np.isfinite(v) & (_periodic_map(phi_axis, psi_axis, emap)[2] <= window_eV)
        scale = float(np.nanmax(np.abs(v[inside]))) if inside.any() else 1.0
        mesh = ax_err.pcolormesh(phi, psi, v, cmap="RdBu_r", vmin=-scale, vmax=scale,
                                 shading="nearest")
        fig.colorbar(mesh, ax=ax_err, label="committee − reference, E − E(min) (eV)")
        ax_err.contour(*_periodic_map(phi_axis, psi_axis, emap), levels=[window_eV],
                       colors="k", linewidths=1)
        rmse = float(np.sqrt(np.nanmean(err[emap <= window_eV] ** 2)))
        ax_err.set_title(f"energy error (RMSE {rmse:.3f} eV within {window_eV} eV)", fontsize=9)
    _angle_axes(ax_err, phi_axis, psi_axis)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
