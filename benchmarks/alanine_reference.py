"""Build the alanine-dipeptide reference data once: the C7eq molecule and a relaxed φ/ψ scan.

Alanine dipeptide (Ace-Ala-Nme, 22 atoms) in vacuum with GFN2-xTB (tblite). Two outputs:

* ``examples/data/alanine_dipeptide.extxyz``: one frame, the relaxed C7eq conformer (free BFGS
  relaxation to fmax 0.01 eV/Å after a constrained one at φ, ψ = -83°, 73°), labelled with
  energy (eV) and forces (eV/Å); info ``phi_atoms`` and ``psi_atoms`` hold the 4 atom indices
  of φ = C(acetyl C=O)-N-Cα-C(C=O) and ψ = N-Cα-C(C=O)-N(methylamide) as int arrays.
* ``examples/data/alanine_phi_psi_grid.extxyz``: a relaxed scan every ``--step`` degrees
  (φ, ψ in [-180, 180), φ-major order: frame k is φ index k // n, ψ index k % n). Both
  dihedrals are held by ``ase.constraints.FixInternals``, everything else is relaxed with BFGS
  (``--fmax``, ``--steps``). Each frame carries the raw (unconstrained) GFN2-xTB energy and
  forces of the relaxed geometry from a fresh oracle call, and info ``phi``, ``psi`` (target,
  degrees), ``phi_measured``, ``psi_measured``, ``converged`` (bool), ``bfgs_steps``,
  ``refine_pass``, ``refined`` (when a refinement lowered it), ``phi_atoms`` and
  ``psi_atoms``.

The scan is a breadth-first sweep of the periodic grid from the grid point nearest C7eq: every
point starts from the lowest-energy already relaxed 4-neighbour, rotated to the target
dihedrals (the whole moving side of each bond is rotated, found from the bond graph), so the
other internal coordinates follow continuously and no point starts from a random conformer.
A sweep can still drag a poor conformer of the other coordinates (methyl and amide-H
orientations, the hydrogen bond) along, so ``--refine`` passes (default 1) relax each point
again from every lower-energy 4-neighbour and keep the lower result (info ``refined``). Each
finished point is written at once to ``runs/alanine_scan/`` and skipped on a rerun, so an
interrupted scan resumes. Progress goes to stdout.

The molecule is built from the SMILES ``CC(=O)N[C@@H](C)C(=O)NC`` (L-alanine, Cα is S: the
stereocentre must be fixed, otherwise the embedding picks either enantiomer and the map is
mirrored, (φ, ψ) -> (-φ, -ψ)) with RDKit: explicit hydrogens, one ETKDG conformer, MMFF
pre-optimised. RDKit is needed only by this script, not by the package::

    /work/venv/bin/pip install rdkit
    OMP_NUM_THREADS=1 nohup python benchmarks/alanine_reference.py > runs/alanine_reference.log &

Cost with 20° (324 points), measured on one core shared with a running benchmark: sweep
417 s (0.3-6 s per point, at most 186 BFGS steps, all converged), one refinement pass 554 s
(644 relaxations, 85 points lowered, all but two by < 0.01 eV): about 16 min in all.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixInternals
from ase.optimize import BFGS

from advsample.oracles import make_oracle

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
MOLECULE_FILE = DATA / "alanine_dipeptide.extxyz"
GRID_FILE = DATA / "alanine_phi_psi_grid.extxyz"
SCRATCH = REPO / "runs" / "alanine_scan"
SMILES = "CC(=O)N[C@@H](C)C(=O)NC"  # L-alanine dipeptide (Ace-Ala-Nme)
BACKBONE = "[CH3]C(=O)N[CX4H1]([CH3])C(=O)N[CH3]"  # C0 C1 O2 N3 CA4 CB5 C6 O7 N8 C9
C7EQ = (-83.0, 73.0)  # degrees
ORACLE = {"type": "xtb", "method": "GFN2-xTB"}


def build_molecule(seed: int = 7) -> tuple[Atoms, list[int], list[int], list[tuple[int, int]]]:
    """Alanine dipeptide from RDKit: atoms (Å), φ and ψ quadruples, bond list (index pairs)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(SMILES))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError("RDKit could not embed alanine dipeptide")
    AllChem.MMFFOptimizeMolecule(mol)
    Chem.AssignStereochemistryFrom3D(mol)
    centres = Chem.FindMolChiralCenters(mol)
    match = mol.GetSubstructMatch(Chem.MolFromSmarts(BACKBONE))
    if len(match) != 10:
        raise RuntimeError("backbone pattern not found")
    c_ace, n1, ca, c_ala, n2 = match[1], match[3], match[4], match[6], match[8]
    if centres != [(ca, "S")]:
        raise RuntimeError(f"expected L-alanine (Cα = S), RDKit finds {centres}")
    atoms = Atoms([a.GetSymbol() for a in mol.GetAtoms()],
                  positions=mol.GetConformer().GetPositions())
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    return atoms, [c_ace, n1, ca, c_ala], [n1, ca, c_ala, n2], bonds


def moving_side(bonds: list[tuple[int, int]], n_atoms: int, a2: int, a3: int) -> list[int]:
    """Atoms connected to ``a3`` once the bond a2-a3 is cut (a3 included): the side a dihedral
    a1-a2-a3-a4 rotates. Raises if the bond is in a ring."""
    neighbours: list[list[int]] = [[] for _ in range(n_atoms)]
    for i, j in bonds:
        neighbours[i].append(j)
        neighbours[j].append(i)
    seen, todo = {a3}, [a3]
    while todo:
        k = todo.pop()
        for j in neighbours[k]:
            if j not in seen and {k, j} != {a2, a3}:
                seen.add(j)
                todo.append(j)
    if a2 in seen:
        raise ValueError(f"bond {a2}-{a3} is in a ring")
    return sorted(seen)


def dihedral(atoms: Atoms, quad: list[int]) -> float:
    """Dihedral of ``quad`` in degrees, wrapped to [-180, 180)."""
    return (atoms.get_dihedral(*quad) + 180.0) % 360.0 - 180.0


def rotated(atoms: Atoms, quads, sides, angles) -> Atoms:
    """Copy of ``atoms`` with each dihedral ``quads[k]`` set to ``angles[k]`` (degrees) by
    rigidly rotating ``sides[k]`` about the central bond."""
    out = atoms.copy()
    out.set_constraint()
    for quad, side, angle in zip(quads, sides, angles):
        out.set_dihedral(*quad, angle % 360.0, indices=side)
    return out


def relax(atoms: Atoms, calc, quads, fmax: float, steps: int) -> tuple[bool, int]:
    """BFGS relaxation in place, with ``quads`` held at their current values (FixInternals)
    when given; returns (converged, steps taken)."""
    if quads:
        atoms.set_constraint(FixInternals(dihedrals_deg=[[None, list(q)] for q in quads]))
    atoms.calc = calc
    opt = BFGS(atoms, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    atoms.set_constraint()
    return converged, opt.nsteps


def labelled(atoms: Atoms, oracle) -> Atoms:
    """Copy of ``atoms`` (no constraints) with the oracle's raw energy (eV) and forces (eV/Å)."""
    out = atoms.copy()
    out.set_constraint()
    out.calc = None
    result = oracle.label(out)
    if not result.ok:
        raise RuntimeError(f"oracle failed: {result.message}")
    out.calc = SinglePointCalculator(out, energy=result.energy, forces=result.forces)
    return out


def c7eq_structure(oracle, seed: int) -> tuple[Atoms, list[int], list[int], list]:
    """The relaxed C7eq conformer (constrained at -83°, 73°, then free, fmax 0.01 eV/Å)."""
    atoms, phi, psi, bonds = build_molecule(seed)
    sides = [moving_side(bonds, len(atoms), q[1], q[2]) for q in (phi, psi)]
    calc = oracle.calculator()
    atoms = rotated(atoms, [phi, psi], sides, C7EQ)
    relax(atoms, calc, [phi, psi], fmax=0.05, steps=300)
    converged, _ = relax(atoms, calc, [], fmax=0.01, steps=500)
    angles = dihedral(atoms, phi), dihedral(atoms, psi)
    print(f"C7eq relaxed (converged {converged}): phi {angles[0]:.1f}, psi {angles[1]:.1f}",
          flush=True)
    if not converged or abs(angles[0] - C7EQ[0]) > 20 or abs(angles[1] - C7EQ[1]) > 20:
        raise RuntimeError(f"free relaxation left C7eq: phi, psi = {angles}")
    out = labelled(atoms, oracle)
    out.info.update(phi_atoms=np.array(phi), psi_atoms=np.array(psi))
    return out, phi, psi, bonds


def _point_file(i: int, j: int) -> Path:
    """Scratch file of grid point (i, j)."""
    return SCRATCH / f"point_{i:02d}_{j:02d}.extxyz"


def sweep_order(n: int, start: tuple[int, int]) -> list[tuple[tuple[int, int], list]]:
    """Breadth-first order over a periodic n x n grid from ``start``: each point with its
    4-neighbours that come earlier in the order (candidate starting geometries)."""
    order, done = [], {start}
    queue = deque([start])
    while queue:
        i, j = queue.popleft()
        order.append((i, j))
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nb = ((i + di) % n, (j + dj) % n)
            if nb not in done:
                done.add(nb)
                queue.append(nb)
    rank = {p: k for k, p in enumerate(order)}
    out = []
    for i, j in order:
        nbs = [((i + di) % n, (j + dj) % n) for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        out.append(((i, j), [p for p in nbs if rank[p] < rank[(i, j)]]))
    return out


def scan(c7eq: Atoms, phi: list[int], psi: list[int], bonds, oracle, step: int,
         fmax: float, steps: int) -> dict[tuple[int, int], Atoms]:
    """Relaxed φ/ψ scan every ``step`` degrees (resumable, see the module docstring): the
    labelled frame of every grid point (i, j)."""
    angles = np.arange(-180, 180, step, dtype=float)
    n = len(angles)
    sides = [moving_side(bonds, len(c7eq), q[1], q[2]) for q in (phi, psi)]
    SCRATCH.mkdir(parents=True, exist_ok=True)
    start = (int(np.argmin(np.abs(angles - C7EQ[0]))), int(np.argmin(np.abs(angles - C7EQ[1]))))
    results: dict[tuple[int, int], Atoms] = {}
    for (i, j), _ in sweep_order(n, start):
        f = _point_file(i, j)
        if f.exists():
            frame = ase.io.read(f, format="extxyz")
            if frame.info["phi"] == angles[i] and frame.info["psi"] == angles[j]:
                results[(i, j)] = frame
    print(f"scan: {n} x {n} points every {step} deg, {len(results)} already done", flush=True)
    calc = oracle.calculator()
    t0, new = time.perf_counter(), 0
    for (i, j), earlier in sweep_order(n, start):
        if (i, j) in results:
            continue
        seeds = [results[p] for p in earlier if p in results] or [c7eq]
        seed = min(seeds, key=lambda a: a.get_potential_energy())
        t = time.perf_counter()
        frame = relaxed_point(seed, (angles[i], angles[j]), phi, psi, sides, calc, oracle,
                              fmax, steps)
        _save_point(frame, i, j)
        results[(i, j)] = frame
        new += 1
        e = frame.get_potential_energy() - c7eq.get_potential_energy()
        print(f"[{len(results):3d}/{n * n}] phi {angles[i]:6.0f} psi {angles[j]:6.0f}  "
              f"E-E(C7eq) {e:+.4f} eV  steps {frame.info['bfgs_steps']:3d} "
              f"conv {frame.info['converged']}  {time.perf_counter() - t:5.1f} s "
              f"(total {time.perf_counter() - t0:6.0f} s)", flush=True)
    print(f"scan: {new} new points in {time.perf_counter() - t0:.0f} s", flush=True)
    return results


def relaxed_point(seed: Atoms, target, phi, psi, sides, calc, oracle, fmax: float,
                  steps: int) -> Atoms:
    """``seed`` rotated to the target (φ, ψ) (degrees), relaxed with both held, and labelled
    with raw oracle energy and forces; info as in the module docstring."""
    atoms = rotated(seed, [phi, psi], sides, target)
    converged, nsteps = relax(atoms, calc, [phi, psi], fmax=fmax, steps=steps)
    frame = labelled(atoms, oracle)
    frame.info = {"phi_atoms": np.array(phi), "psi_atoms": np.array(psi)}  # not the seed's
    frame.info.update(phi=float(target[0]), psi=float(target[1]),
                      phi_measured=dihedral(atoms, phi), psi_measured=dihedral(atoms, psi),
                      converged=converged, bfgs_steps=nsteps)
    return frame


def _save_point(frame: Atoms, i: int, j: int) -> None:
    """Write grid point (i, j) to its scratch file atomically."""
    tmp = _point_file(i, j).with_suffix(".tmp")
    ase.io.write(tmp, frame, format="extxyz")
    tmp.replace(_point_file(i, j))


def refine(results: dict, phi, psi, bonds, oracle, step: int, fmax: float, steps: int,
           passes: int, tol: float = 1e-3) -> dict:
    """Remove hysteresis of the sweep: each point is relaxed again from every 4-neighbour
    that is lower in energy than it, and the result kept when lower by more than ``tol`` (eV).
    Points are visited from the lowest energy up, so a better conformer of the other
    coordinates spreads uphill within a pass; ``passes`` passes (resumable: info
    ``refine_pass``)."""
    angles = np.arange(-180, 180, step, dtype=float)
    n = len(angles)
    sides = [moving_side(bonds, len(next(iter(results.values()))), q[1], q[2])
             for q in (phi, psi)]
    calc = oracle.calculator()

    def energy(p):
        """Current oracle energy (eV) of grid point p."""
        return results[p].get_potential_energy()

    for k in range(1, passes + 1):
        t0, improved, tried = time.perf_counter(), 0, 0
        for i, j in sorted(results, key=energy):
            if int(results[(i, j)].info.get("refine_pass", 0)) >= k:
                continue
            best = results[(i, j)]
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                seed = results[((i + di) % n, (j + dj) % n)]
                if seed.get_potential_energy() >= best.get_potential_energy():
                    continue
                tried += 1
                frame = relaxed_point(seed, (angles[i], angles[j]), phi, psi, sides, calc,
                                      oracle, fmax, steps)
                if frame.get_potential_energy() < best.get_potential_energy() - tol:
                    frame.info["refined"] = True
                    best = frame
            if best is not results[(i, j)]:
                improved += 1
                print(f"refine {k}: phi {angles[i]:6.0f} psi {angles[j]:6.0f} lowered by "
                      f"{energy((i, j)) - best.get_potential_energy():.4f} eV", flush=True)
            best.info["refine_pass"] = k
            _save_point(best, i, j)
            results[(i, j)] = best
        print(f"refine pass {k}: {tried} relaxations, {improved} points lowered, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return results


def _check_roundtrip(path: Path, phi: list[int], psi: list[int]) -> None:
    """The molecule file reads back with the φ/ψ quadruples as 4 ints each."""
    back = ase.io.read(path, format="extxyz")
    assert [int(x) for x in back.info["phi_atoms"]] == phi, back.info["phi_atoms"]
    assert [int(x) for x in back.info["psi_atoms"]] == psi, back.info["psi_atoms"]
    assert len(back) == 22 and back.get_forces().shape == (22, 3)


def _summary(frames: list[Atoms], n: int) -> None:
    """Print the grid's local minima (periodic) and named reference points."""
    energy = np.array([a.get_potential_energy() for a in frames]).reshape(n, n)
    energy = energy - energy.min()
    angles = np.array([a.info["phi"] for a in frames]).reshape(n, n)[:, 0]
    shifts = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
    lower = np.all([energy < np.roll(energy, s, axis=(0, 1)) for s in shifts], axis=0)
    print("grid minima (phi, psi, E - E_min eV):")
    for i, j in sorted(zip(*np.nonzero(lower)), key=lambda p: energy[p]):
        print(f"  {angles[i]:6.0f} {angles[j]:6.0f}  {energy[i, j]:.4f}")
    converged = sum(bool(a.info["converged"]) for a in frames)
    print(f"converged: {converged} of {len(frames)}")


def main(argv: list[str] | None = None) -> None:
    """Build the molecule file and the scan (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=20, help="grid spacing (degrees)")
    parser.add_argument("--fmax", type=float, default=0.02, help="eV/Å, constrained relaxations")
    parser.add_argument("--steps", type=int, default=200, help="BFGS steps per grid point")
    parser.add_argument("--seed", type=int, default=7, help="RDKit embedding seed")
    parser.add_argument("--refine", type=int, default=1,
                        help="passes re-relaxing each point from its lower neighbours")
    args = parser.parse_args(argv)
    if 360 % args.step:
        sys.exit("--step must divide 360")
    oracle = make_oracle(ORACLE)
    t0 = time.perf_counter()
    c7eq, phi, psi, bonds = c7eq_structure(oracle, args.seed)
    DATA.mkdir(parents=True, exist_ok=True)
    ase.io.write(MOLECULE_FILE, c7eq, format="extxyz")
    _check_roundtrip(MOLECULE_FILE, phi, psi)
    print(f"wrote {MOLECULE_FILE.relative_to(REPO)}: phi atoms {phi}, psi atoms {psi}, "
          f"E = {c7eq.get_potential_energy():.4f} eV", flush=True)
    results = scan(c7eq, phi, psi, bonds, oracle, args.step, args.fmax, args.steps)
    results = refine(results, phi, psi, bonds, oracle, args.step, args.fmax, args.steps,
                     args.refine)
    n = 360 // args.step
    frames = [results[(i, j)] for i in range(n) for j in range(n)]
    tmp = GRID_FILE.with_suffix(".tmp")
    ase.io.write(tmp, frames, format="extxyz")
    tmp.replace(GRID_FILE)
    print(f"wrote {GRID_FILE.relative_to(REPO)}: {len(frames)} frames; "
          f"total {time.perf_counter() - t0:.0f} s", flush=True)
    _summary(frames, 360 // args.step)


if __name__ == "__main__":
    main()
