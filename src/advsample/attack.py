"""The adversarial objective and its batched optimisation over displacements δ.

For a structure X with N atoms (METHOD.md section 2):

    e(X)     = (Ē(X) − Σ_i ε_{Z_i}) / N                     per-atom energy, eV/atom
    log Q    = log( (1/K) Σ_k exp(−e_k / kT) )               over the K training structures
    log L(X) = log σ²_F(X) − e(X)/kT − log Q

ε are per-element reference energies fitted by least squares on the training set, and e_k
uses the same definition with the training labels, so Q and p(X) = exp(−e/kT)/Q compare like
with like. Maximising log L has the same maxima as L = σ²_F · p without underflow.

The attack optimises δ with Adam for all seeds at once (every structure in one batch; the
summed objective gives each seed its own gradient because structures do not interact) and
keeps for each seed the step with the highest objective that satisfies the constraints.
Besides δ it can optimise a strain of periodic cells and torsion angles θ about rotatable bonds
of molecules (:mod:`advsample.torsions`): X = torsions(X0, θ) + δ, then the strain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from advsample.committee import Committee
from advsample.contacts import ContactSet
from advsample.geometry import min_interatomic_distance
from advsample.models.base import fit_element_energies
from advsample.progress import progress_bar
from advsample.structures import Batch
from advsample.torsions import TorsionSet, apply_torsions
from advsample.uncertainty import force_variance

TORSION_INIT_SCALE = 0.05  # rad: std of the initial θ, so that restarts of a seed differ
AUTO_KT_MULTIPLE = 4.0
"""kT "auto" in units of k_B T̂ / N̄ (see :meth:`BoltzmannPrior.auto_kT`): one generation of
attacks at this kT put most picks within the harmonic thermal range on NH3 (4 atoms), alanine
dipeptide (22) and zeolite complexes (44) alike (docs/benchmarks/attack_kT.md)."""


@dataclass
class BoltzmannPrior:
    """p(X) = exp(−e(X)/kT) / Q with e per atom after reference subtraction.

    kT: eV per atom; element_energy: ε [119] eV; log_q: log Q; e_min: lowest training e;
    e_max: the energy ceiling's reference (eV/atom): the highest training e from
    :meth:`from_training`; the loop sets it to the highest *initial* e (label or committee
    prediction), so that the ceiling does not rise with every high label.
    """

    kT: float
    element_energy: torch.Tensor
    log_q: float
    e_min: float
    e_max: float = math.inf

    @classmethod
    def from_training(cls, training: Batch, kT: float) -> BoltzmannPrior:
        """Fit ε and Q on the labelled training structures (energies [K] in eV)."""
        if kT <= 0:
            raise ValueError("kT must be positive")
        eps, _ = fit_element_energies(training)
        prior = cls(kT=kT, element_energy=eps, log_q=0.0, e_min=0.0)
        e = prior.per_atom_energy(training.energy.to(torch.float64), training)
        log_q = torch.logsumexp(-e / kT, 0) - math.log(e.numel())
        return cls(kT=kT, element_energy=eps, log_q=float(log_q), e_min=float(e.min()),
                   e_max=float(e.max()))

    @classmethod
    def energy_spread(cls, initial: Batch) -> float:
        """The spread (max − min) of the labelled ``initial`` structures' per-atom energies,
        element references subtracted (eV/atom): the attack's ``energy_above_initial``
        "auto"."""
        prior = cls.from_training(initial, 1.0)
        return max(prior.e_max - prior.e_min, 1e-6)

    @classmethod
    def auto_kT(cls, initial: Batch) -> float:
        """kT "auto" (eV/atom): AUTO_KT_MULTIPLE · k_B T̂ / N̄, where T̂ is the temperature
        the ``initial`` data's energy fluctuation implies. In the harmonic approximation the
        potential energy of n vibrational modes fluctuates with standard deviation
        sqrt(n/2) k_B T, so k_B T̂ = N̄ std(e) / sqrt(n/2) with e the per-atom energies
        (element references subtracted), N̄ the mean atom count and n = 3N̄ − 6 (molecules),
        3N̄ − 3 (periodic cells) or d·N̄ (toys). The prior exp(−e/kT) then weights a total
        energy ΔE above the lowest structure by exp(−ΔE / (4 k_B T̂)), whatever the size;
        the spread itself grows like sqrt(n), which sent attacks on 22 atoms far above any
        thermal energy (docs/benchmarks/attack_kT.md)."""
        prior = cls.from_training(initial, 1.0)
        e = prior.per_atom_energy(initial.energy.to(torch.float64), initial)
        n_atoms = float(initial.n_atoms.to(torch.float64).mean())
        if initial.dim < 3:
            modes = initial.dim * n_atoms
        else:
            modes = 3 * n_atoms - (3 if bool(initial.pbc.any()) else 6)
        std = float(e.std(unbiased=False)) if e.numel() > 1 else 0.0
        return max(AUTO_KT_MULTIPLE * std / math.sqrt(max(modes, 1.0) / 2), 1e-6)

    def reference(self, batch: Batch, dtype: torch.dtype) -> torch.Tensor:
        """Σ ε_Z of each structure [B] (eV)."""
        ref = torch.zeros(batch.n_structures, dtype=dtype, device=batch.device)
        eps = self.element_energy.to(dtype=dtype, device=batch.device)
        return ref.index_add(0, batch.structure, eps[batch.numbers])

    def per_atom_energy(self, energy: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Total energies [B] (eV) -> e [B] (eV/atom) after subtracting Σ ε_Z."""
        ref = self.reference(batch, energy.dtype)
        return (energy - ref) / batch.n_atoms.to(energy.dtype)


@dataclass
class AttackConfig:
    """Settings of the attack. Lengths in Å (or toy units), energies in eV.

    steps: Adam steps T; lr: Adam learning rate on δ; init_scale: δ0, std of the initial δ;
    restarts: attacks per seed; reduce: σ²_F over atoms (mean, max, sum);
    max_displacement: bound on each atom's |δ| (None: unbounded);
    box: (lo, hi) bounds on every coordinate of X0 + δ (toys);
    min_distance: smallest allowed interatomic distance (steps below it are not kept);
    energy_ceiling: largest allowed e(X) − min_k e_k, eV/atom (steps above are not kept);
    energy_above_initial: largest allowed e(X) − e_max of the prior, eV/atom: no kept step
    predicted further above the highest initial (or, outside the loop, training) energy
    (steps above are not kept; the loop resolves the setting "auto" to a number first);
    remove_translation: subtract each structure's mean δ (atoms; off for one-point toys);
    strain: also optimise a symmetric strain ε [B, 3, 3] of periodic cells, applied to the cell
    and the positions alike (X = (X0 + δ)(I + ε), cell = cell0 (I + ε), so scaled coordinates
    follow the cell); max_strain bounds each component of ε; displacements: optimise δ (False
    with strain gives a pure strain attack, False with torsions a pure torsion attack).
    torsions: also optimise torsion angles θ [B, S] (rad) about bonds of molecules, applied
    before δ (X = torsions(X0, θ) + δ, see :mod:`advsample.torsions`): None (no torsions),
    "rotatable" (the rotatable bonds found from each seed's connectivity) or a list of
    [j, k] bonds in local atom indices applied to every seed (k's side turns; the smaller
    side is moved, which changes nothing but a rigid rotation); θ starts at N(0, 0.05²) rad;
    min_contact: no kept step with two atoms of a molecule that are neither bonded nor bonded
    to a common atom in the seed closer than this times their covalent radii sum
    (:mod:`advsample.contacts`; None: not checked);
    torsion_start: "seed" (every restart starts there) or "random" (restarts after a seed's
    first start from torsions drawn uniformly in [-π, π), within ±max_torsion: the seed's
    conformer turned anywhere, so that the ascent can begin beyond the barriers around it);
    target_sigma: aim at σ_F = sqrt(σ²_F) = this (eV/Å) instead of the maximum: a seed keeps
    the first feasible step whose σ_F reaches it and stays there (None: maximise log L; the
    loop sets it from a calibrated target error, see ``sampler.target_error``);
    torsion_lr: Adam learning rate of θ (rad); max_torsion: bound on each |θ| (rad, None:
    free). max_displacement bounds δ only, and box cannot be combined with torsions.
    """

    steps: int = 300
    lr: float = 0.01
    init_scale: float = 0.01
    restarts: int = 1
    reduce: str = "mean"
    max_displacement: float | None = None
    box: tuple[float, float] | None = None
    min_distance: float | None = None
    energy_ceiling: float | None = None
    energy_above_initial: float | str | None = None
    remove_translation: bool = True
    strain: bool = False
    max_strain: float = 0.05
    displacements: bool = True
    torsions: list | str | None = None
    torsion_lr: float = 0.05
    max_torsion: float | None = None
    torsion_start: str = "seed"
    min_contact: float | None = None
    target_sigma: float | None = None
    seed: int = 0
    progress: bool = False


@dataclass
class Candidates:
    """Proposed structures and their scores, one entry per structure (B).

    batch: the structures; objective: log L; uncertainty: σ²_F (eV/Å)²; energy: committee
    mean energy (eV); parent: index of the seed structure; step: attack step kept (−1 for
    samplers without steps); displacement: largest per-atom |X − X_seed| (Å);
    feasible: whether the structure satisfies the sampler's constraints.
    """

    batch: Batch
    objective: torch.Tensor
    uncertainty: torch.Tensor
    energy: torch.Tensor
    parent: torch.Tensor
    step: torch.Tensor
    displacement: torch.Tensor
    feasible: torch.Tensor

    def __len__(self) -> int:
        return self.batch.n_structures

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        """The candidates of ``parts`` in order (indices of part k shift by the sizes of the
        parts before it)."""
        from advsample.structures import concatenate

        return cls(batch=concatenate([c.batch for c in parts]),
                   **{k: torch.cat([getattr(c, k) for c in parts]) for k in
                      ("objective", "uncertainty", "energy", "parent", "step", "displacement",
                       "feasible")})

    def select(self, index) -> Candidates:
        """The candidates at ``index`` (ints or bool mask over B), in that order."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.objective.device)
        return Candidates(
            batch=self.batch.select(index),
            **{k: getattr(self, k)[index] for k in
               ("objective", "uncertainty", "energy", "parent", "step", "displacement",
                "feasible")},
        )


def log_likelihood(energy: torch.Tensor, forces: torch.Tensor, structure: torch.Tensor,
                   n_structures: int, reduce: str, reference: torch.Tensor,
                   n_atoms: torch.Tensor, kT: torch.Tensor | float, log_q: torch.Tensor | float):
    """(log L [B], σ²_F [B], mean energy [B] (eV)) from a committee's energy [M, B] (eV) and
    forces [M, N, d] (eV/Å): log L = log σ²_F + log p, log p = −(Ē − Σε_Z)/n_atoms/kT − log Q
    with ``reference`` = Σε_Z [B] (eV) and n_atoms [B] of the prior's per-atom energy."""
    var = force_variance(forces, structure, n_structures, reduce)
    mean_e = energy.mean(0)
    log_p = -((mean_e - reference) / n_atoms) / kT - log_q
    return torch.log(var.clamp_min(1e-300)) + log_p, var, mean_e


def _likelihood_args(batch: Batch, prior: BoltzmannPrior, reduce: str, dtype: torch.dtype):
    """The arguments of :func:`log_likelihood` after energy and forces, for ``batch``."""
    return (batch.structure, batch.n_structures, reduce, prior.reference(batch, dtype),
            batch.n_atoms.to(dtype),
            torch.tensor(prior.kT, dtype=dtype, device=batch.device),
            torch.tensor(prior.log_q, dtype=dtype, device=batch.device))


def score(committee: Committee, batch: Batch, prior: BoltzmannPrior, reduce: str = "mean",
          create_graph: bool = False):
    """(log L [B], σ²_F [B], mean energy [B]) of ``batch`` under ``committee``."""
    out = committee(batch, forces=True, create_graph=create_graph)
    return log_likelihood(out.energy, out.forces,
                          *_likelihood_args(batch, prior, reduce, out.energy.dtype))


def score_backward(committee: Committee, batch: Batch, prior: BoltzmannPrior,
                   reduce: str = "mean", sign: float = 1.0):
    """:func:`score`, with ``sign · Σ log L`` backpropagated to what ``batch`` was made from
    (as ``(sign * objective.sum()).backward()``), through the compiled committee when
    ``committee.compiles_derivatives``; results detached."""
    if committee.compiles_derivatives:
        from advsample.compiled import objective_backward

        return objective_backward(committee, batch, log_likelihood,
                                  *_likelihood_args(batch, prior, reduce, batch.dtype),
                                  scale=sign)
    objective, var, mean_e = score(committee, batch, prior, reduce, create_graph=True)
    (sign * objective.sum()).backward()
    return objective.detach(), var.detach(), mean_e.detach()


def constraints_hold(batch: Batch, mean_energy: torch.Tensor, prior: BoltzmannPrior,
                     cfg: AttackConfig) -> torch.Tensor:
    """bool [B]: minimum distance and energy ceilings satisfied, everything finite."""
    ok = torch.isfinite(mean_energy)
    above = cfg.energy_above_initial
    if isinstance(above, str):
        raise ValueError(f"energy_above_initial {above!r}: the loop resolves 'auto' to eV/atom; "
                         "give a number when attacking directly")
    if cfg.energy_ceiling is not None or above is not None:
        e = prior.per_atom_energy(mean_energy.detach(), batch)
        if cfg.energy_ceiling is not None:
            ok &= (e - prior.e_min) <= cfg.energy_ceiling
        if above is not None:
            ok &= (e - prior.e_max) <= above
    if cfg.min_distance is not None:
        ok &= min_interatomic_distance(batch, within=cfg.min_distance) >= cfg.min_distance
    return ok


def project(delta: torch.Tensor, seeds: Batch, cfg: AttackConfig) -> torch.Tensor:
    """Map displacements [N, d] onto the allowed set (in place), and return them."""
    if cfg.remove_translation:
        sums = delta.new_zeros(seeds.n_structures, delta.shape[1])
        mean = sums.index_add(0, seeds.structure, delta) / seeds.n_atoms.unsqueeze(1)
        multi = (seeds.n_atoms > 1)[seeds.structure].unsqueeze(1)
        delta.sub_(torch.where(multi, mean[seeds.structure], torch.zeros_like(delta)))
    if cfg.max_displacement is not None:
        norm = delta.norm(dim=1, keepdim=True).clamp_min(1e-30)
        delta.mul_(torch.clamp(cfg.max_displacement / norm, max=1.0))
    if cfg.box is not None:
        lo, hi = cfg.box
        x0 = seeds.positions.detach()
        step = (x0 + delta).clamp(lo, hi) - x0
        for _ in range(2):  # x0 + (x - x0) may round one ulp past the wall: step back
            x = x0 + step
            step = torch.where(x > hi, torch.nextafter(step, step.new_tensor(-math.inf)), step)
            step = torch.where(x0 + step < lo, torch.nextafter(step, step.new_tensor(math.inf)),
                               step)
        delta.copy_(step)
    if seeds.fixed is not None:
        delta[seeds.fixed] = 0.0
    return delta


def deformed(seeds: Batch, delta: torch.Tensor, strain: torch.Tensor | None,
             torsions: TorsionSet | None = None, theta: torch.Tensor | None = None) -> Batch:
    """Seeds turned by torsions θ [B, S] (rad; when ``torsions`` and ``theta`` are given),
    displaced by δ [N, d] and, if given, strained by ε [B, d, d] (symmetrised), in that order.

    Positions and cell are multiplied by I + ε so scaled coordinates are kept; ε only acts
    on periodic structures.
    """
    positions = seeds.positions
    if torsions is not None and theta is not None:
        positions = apply_torsions(positions, torsions, theta)
    positions = positions + delta
    if strain is None:
        return seeds.with_positions(positions)
    periodic = seeds.pbc.any(dim=1).to(strain.dtype)[:, None, None]
    sym = 0.5 * (strain + strain.transpose(1, 2)) * periodic
    deformation = torch.eye(seeds.dim, dtype=strain.dtype, device=strain.device) + sym  # [B, d, d]
    positions = torch.einsum("ni,nij->nj", positions, deformation[seeds.structure])
    return replace(seeds, positions=positions, cell=seeds.cell @ deformation, energy=None,
                   forces=None)


def wrap_positions(batch: Batch) -> Batch:
    """Atoms of periodic structures moved into their cell along periodic directions."""
    periodic = batch.pbc.any(dim=1)
    if not periodic.any():
        return batch
    cell = batch.cell[batch.structure]  # [N, 3, 3]
    atom_periodic = periodic[batch.structure]
    eye = torch.eye(batch.dim, dtype=cell.dtype, device=cell.device)
    safe = torch.where(atom_periodic[:, None, None], cell, eye)
    scaled = torch.linalg.solve(safe.transpose(1, 2), batch.positions.unsqueeze(-1)).squeeze(-1)
    pbc = batch.pbc[batch.structure] & atom_periodic[:, None]
    scaled = torch.where(pbc, scaled - torch.floor(scaled), scaled)
    wrapped = torch.einsum("ni,nij->nj", scaled, cell)
    return batch.with_positions(torch.where(atom_periodic[:, None], wrapped, batch.positions))


def largest_atom_displacement(delta: torch.Tensor, seeds: Batch) -> torch.Tensor:
    """Largest |δ_i| of each structure [B] (Å) from displacements δ [N, d] of ``seeds``."""
    norms = delta.detach().norm(dim=1)
    return delta.new_zeros(seeds.n_structures).scatter_reduce(
        0, seeds.structure, norms, reduce="amax", include_self=False)


def attack(committee: Committee, seeds: Batch, prior: BoltzmannPrior,
           cfg: AttackConfig | None = None, record_history: bool = False):
    """Maximise log L over δ for every seed (× restarts) in one batched optimisation.

    Returns Candidates (one per seed and restart, positions X0 + δ at the best feasible step;
    ``feasible`` False where no step satisfied the constraints) and, with record_history, the
    objective at every evaluated step, a tensor [T + 1, B].
    """
    cfg = cfg or AttackConfig()
    committee.eval()
    for p in committee.parameters():
        p.requires_grad_(False)
    try:
        return _attack(committee, seeds, prior, cfg, record_history)
    finally:
        for p in committee.parameters():
            p.requires_grad_(True)


def _attack(committee, seeds, prior, cfg, record_history):
    parent = torch.arange(seeds.n_structures, device=seeds.device).repeat_interleave(cfg.restarts)
    torsions = _torsion_set(seeds, cfg)
    seeds = seeds.without_labels().repeat(cfg.restarts)
    contacts = None if cfg.min_contact is None else ContactSet.from_batch(seeds, cfg.min_contact)
    x0 = seeds.positions.detach()
    gen = torch.Generator().manual_seed(cfg.seed)  # on the CPU: same δ0 on every device
    delta = torch.randn(x0.shape, generator=gen, dtype=x0.dtype, device="cpu").to(x0.device)
    delta = delta * cfg.init_scale
    if not cfg.displacements:
        delta.zero_()
    delta = project(delta, seeds, cfg).requires_grad_(cfg.displacements)
    strain = None
    variables = [delta] if cfg.displacements else []
    if cfg.strain:
        strain = x0.new_zeros(seeds.n_structures, x0.shape[1], x0.shape[1], requires_grad=True)
        variables.append(strain)
    theta = None
    groups = [{"params": variables}] if variables else []
    if torsions is not None:
        torsions = torsions.repeat(cfg.restarts)
        theta = torch.randn(seeds.n_structures, torsions.n_slots, generator=gen,
                            dtype=x0.dtype, device="cpu").to(x0.device) * TORSION_INIT_SCALE
        if cfg.torsion_start == "random":
            anywhere = (torch.rand(theta.shape, generator=gen, dtype=x0.dtype, device="cpu")
                        .to(x0.device) * 2 - 1) * math.pi
            later = (torch.arange(seeds.n_structures, device=x0.device) % cfg.restarts) > 0
            theta = torch.where(later[:, None], anywhere, theta)
        elif cfg.torsion_start != "seed":
            raise ValueError(f"torsion_start must be 'seed' or 'random', not "
                             f"{cfg.torsion_start!r}")
        theta = _bound_torsions(theta * torsions.valid, cfg).requires_grad_(True)
        if torsions.n_slots:
            groups.append({"params": [theta], "lr": cfg.torsion_lr})
    if not groups:
        raise ValueError("nothing to optimise: displacements, strain and torsions are all off "
                         "(or no seed has a torsion)")
    opt = torch.optim.Adam(groups, lr=cfg.lr)

    b = seeds.n_structures
    best_obj = x0.new_full((b,), -math.inf)
    best_var = x0.new_zeros(b)
    best_e = x0.new_full((b,), math.nan)
    best_step = torch.full((b,), -1, dtype=torch.long, device=x0.device)
    best_delta = delta.detach().clone()
    best_strain = None if strain is None else strain.detach().clone()
    best_theta = None if theta is None else theta.detach().clone()
    reached = torch.zeros(b, dtype=torch.bool, device=x0.device)  # target_sigma met: frozen
    history = []
    for t in progress_bar(range(cfg.steps + 1), desc="attack", disable=not cfg.progress):
        batch = deformed(seeds, delta, strain, torsions, theta)
        if t < cfg.steps:  # the gradient of −Σ log L reaches δ, ε and θ
            opt.zero_grad(set_to_none=True)
            objective, var, mean_e = score_backward(committee, batch, prior, cfg.reduce, -1.0)
        else:
            objective, var, mean_e = (v.detach() for v in score(committee, batch, prior,
                                                                cfg.reduce))
        with torch.no_grad():
            ok = constraints_hold(batch, mean_e, prior, cfg) & torch.isfinite(objective)
            if contacts is not None:
                ok &= contacts.hold(batch.positions)
            better = ok & (objective > best_obj) & ~reached
            if cfg.target_sigma is not None:  # the first step at the target wins, then stop
                arrived = ok & ~reached & (var.sqrt() >= cfg.target_sigma)
                better |= arrived
                reached |= arrived
            best_obj = torch.where(better, objective, best_obj)
            best_var = torch.where(better, var, best_var)
            best_e = torch.where(better, mean_e, best_e)
            best_step = torch.where(better, torch.full_like(best_step, t), best_step)
            atom_better = better[seeds.structure].unsqueeze(1)
            best_delta = torch.where(atom_better, delta.detach(), best_delta)
            if strain is not None:
                best_strain = torch.where(better[:, None, None], strain.detach(), best_strain)
            if theta is not None:
                best_theta = torch.where(better[:, None], theta.detach(), best_theta)
            if record_history:
                history.append(objective.detach().clone())
        if t == cfg.steps:  # the last pass only scores (continue: the bar ends at 100 %)
            continue
        opt.step()
        with torch.no_grad():
            project(delta, seeds, cfg)
            if strain is not None:
                strain.clamp_(-cfg.max_strain, cfg.max_strain)
            if theta is not None:
                _bound_torsions(theta, cfg)
            if reached.any():  # seeds at their target stay where they arrived
                delta.copy_(torch.where(reached[seeds.structure].unsqueeze(1), best_delta,
                                        delta))
                if strain is not None:
                    strain.copy_(torch.where(reached[:, None, None], best_strain, strain))
                if theta is not None:
                    theta.copy_(torch.where(reached[:, None], best_theta, theta))

    best = deformed(seeds, best_delta, best_strain, torsions, best_theta)
    moved = best_delta
    if best_theta is not None:  # the largest atom move from the seed, strain aside
        moved = apply_torsions(x0, torsions, best_theta) + best_delta - x0
    candidates = Candidates(
        batch=wrap_positions(best.with_positions(best.positions.detach())),
        objective=best_obj,
        uncertainty=best_var,
        energy=best_e,
        parent=parent,
        step=best_step,
        displacement=largest_atom_displacement(moved, seeds),
        feasible=best_step >= 0,
    )
    if record_history:
        return candidates, torch.stack(history)
    return candidates


def _torsion_set(seeds: Batch, cfg: AttackConfig) -> TorsionSet | None:
    """The torsions of ``seeds`` (one entry per seed, before restarts) asked for by
    ``cfg.torsions``, or None without torsions."""
    if cfg.torsions is None:
        return None
    if cfg.box is not None:
        raise ValueError("box bounds X0 + δ only: it cannot be combined with torsions")
    if isinstance(cfg.torsions, str):
        return TorsionSet.from_batch(seeds, cfg.torsions)
    bonds = [tuple(int(i) for i in bond) for bond in cfg.torsions]
    if any(len(bond) != 2 for bond in bonds):
        raise ValueError(f"torsions must be [j, k] atom pairs, got {cfg.torsions!r}")
    return TorsionSet.from_batch(seeds, [bonds] * seeds.n_structures)


def _bound_torsions(theta: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    """θ [B, S] (rad) clamped in place to ±cfg.max_torsion (unchanged when None)."""
    if cfg.max_torsion is not None:
        theta.clamp_(-cfg.max_torsion, cfg.max_torsion)
    return theta
