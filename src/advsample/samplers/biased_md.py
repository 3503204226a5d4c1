"""Uncertainty-biased NN-MD (METHOD.md section 6): MD pushed toward where the committee disagrees.

The modern alternative to attacks: UDD-AL (Kulichenko et al., "Uncertainty-driven dynamics for
active learning of interatomic potentials", Nat. Comput. Sci. 3, 230 (2023)) and
uncertainty-biased MD (Zaverkin et al., npj Comput. Mater. 10, 83 (2024)) run the dynamics on
the committee mean energy plus a bias that is lower where the committee disagrees, so the
trajectories leave the wells the data already covers faster than plain MD at the same
temperature. We implement the UDD-AL bias (energy-variance form), per structure b:

    σ²_E       = (1/M) Σ_m (E_m − Ē)²                      committee energy variance (eV²)
    s          = σ²_E / (M · N_A · B²)                      (dimensionless)
    E_bias     = A · [exp(−s) − 1]                          in [−A, 0] (eV)
    E_biased   = Ē + E_bias                                 the potential the MD runs on
    F_bias     = −∇E_bias = (A exp(−s) / (M N_A B²)) ∇σ²_E
    ∇σ²_E      = −(2/M) Σ_m (E_m − Ē) F_m                   (Σ_m (E_m − Ē) ∇Ē = 0)

with M committee members, N_A atoms of the structure, E_m member m's energy (eV) and
F_m = −∇E_m its forces (eV/Å) from the committee's autograd pass; the chain rule through σ²_E
is applied in closed form, which is exactly −∇E_bias (checked against finite differences in
the tests) and needs no second backward pass. σ²_E is the population variance (1/M); the
papers' normalisation of the spread may differ by such a constant, which only rescales B.
The bias is bounded (E_biased ≥ Ē − A) and its force fades once s ≫ 1: a trajectory is drawn
into moderately uncertain regions but not driven without limit into absurd ones. Per unit
∇σ_E the pull is largest at s = ½, i.e. where σ_E = B √(M N_A / 2).

Scales, so that one setting works across systems (``bias_units``, ``bias_width_units``):

- the depth A is an energy the dynamics compares with k_B T: ``"kT"`` (default) makes
  A = bias_strength · k_B T for the whole structure, so the bias can reweight configurations
  by at most exp(bias_strength) whatever the size of the molecule. Also accepted:
  ``"kT/atom"`` (A = strength · N_A · k_B T), ``"eV/atom"`` (A = strength · N_A) and ``"eV"``
  (A = strength, UDD-AL's raw parameter, tuned per system). Per-atom depths grow with the
  molecule and overwhelm larger ones: 0.1 eV/atom (the first default, chosen on NH3) is
  15 k_B T on NH3 at 300 K but 85 k_B T on alanine dipeptide, where it tore molecules apart
  (docs/benchmarks/bias_depth.md).
- the width B follows the committee: ``"seeds"`` (default) makes
  B² = bias_width² · ⟨σ²_E / (M N_A)⟩ over the seeds (training structures), so that
  s = σ²_E / (N_A bias_width² ⟨σ²_E / N_A⟩_seeds) is the energy variance per atom in units of
  the committee's own variance on its training data: s = 1 / bias_width² at a typical seed,
  and the pull per unit ∇σ_E is largest at σ²_E = bias_width² / 2 times the seeds' (2x for
  the default width 2) and fades well beyond. A width in eV (``"eV"``, B = bias_width) is
  UDD-AL's parameter, but the committees' energy spreads differ by orders of magnitude
  between systems (on training data: 0.001 eV for NH3, 0.1-0.4 eV for alanine dipeptide),
  so one value in eV leaves the bias either flat (s ≫ 1, no force) or negligible (s ≪ 1).

Defaults A = 5 k_B T, B = 2 (x the seeds' spread), chosen on NH3 and alanine dipeptide
(docs/benchmarks/bias_depth.md: one generation of 300 K biased MD from each generation-0
committee, every frame labelled with GFN2-xTB). On NH3 they raise the frames' median σ²_F
6.6x over plain MD and the fraction of thermal frames above the gate from 55 % to 66 %, with
89 % of the frames still thermal (95 % plain); 10 k_B T already leaves only 38 % thermal. On
alanine dipeptide, whose plain NN-MD frames are all above the gate already, they change
little (55 % thermal vs 61 % plain), where the first default (0.1 eV/atom, B 0.01 eV) left 20 %
thermal on alanine and 86 % on NH3 with no gain in σ²_F.

Candidates are scored exactly like those of the MD sampler, on the UNBIASED committee
(objective log L, σ²_F, mean energy Ē), and the same trust bound (max_uncertainty on σ²_F)
and sanity filters stop a trajectory, so the same selection applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from ase import units

from advsample.committee import Committee
from advsample.dynamics import ForcesFn
from advsample.samplers.md import MDSampler
from advsample.structures import Batch

log = logging.getLogger(__name__)

BIAS_UNITS = ("kT", "kT/atom", "eV/atom", "eV")
"""Accepted units of ``BiasedMDSampler.bias_strength`` (see the module docstring)."""

WIDTH_UNITS = ("seeds", "eV")
"""Accepted units of ``BiasedMDSampler.bias_width`` (see the module docstring)."""


def bias_energy(member_energy: torch.Tensor, n_atoms: torch.Tensor, strength: float,
                width: float, per_atom: bool = True) -> torch.Tensor:
    """UDD-AL bias E_bias = A [exp(−σ²_E / (M N_A B²)) − 1] per structure, [B] (eV).

    member_energy: E_m [M, B] (eV); n_atoms: N_A [B]; strength: A in eV, per atom (A · N_A)
    when ``per_atom``; width: B (eV). Differentiable (the tests take its finite differences).
    """
    return _bias_terms(member_energy, n_atoms, strength, width, per_atom)[1]


def _bias_terms(member_energy: torch.Tensor, n_atoms: torch.Tensor, strength: float,
                width: float, per_atom: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(E_m − Ē [M, B] eV, E_bias [B] eV, dE_bias/dσ²_E [B] 1/eV) of the module formula."""
    m = member_energy.shape[0]
    n = n_atoms.to(member_energy.dtype)
    deviation = member_energy - member_energy.mean(0)
    scale = m * n * width**2  # M N_A B² (eV²)
    s = deviation.pow(2).mean(0) / scale
    amplitude = strength * n if per_atom else torch.full_like(n, strength)  # A (eV)
    return deviation, amplitude * torch.expm1(-s), -amplitude * torch.exp(-s) / scale


def biased_committee_forces(committee: Committee, strength: float, width: float,
                            per_atom: bool = True) -> ForcesFn:
    """Energy Ē + E_bias [B] (eV) and forces F̄ − ∇E_bias [N, d] (eV/Å) as a ForcesFn.

    The drop-in for ``dynamics.committee_forces(committee)`` (which it equals, bit for bit,
    at ``strength`` 0). strength: A (eV; eV/atom when ``per_atom``); width: B (eV); see
    :func:`bias_energy` and the module docstring. Puts the committee in evaluation mode.
    """
    if not width > 0:
        raise ValueError("bias width must be positive")
    committee.eval()

    def forces_fn(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Biased energy [B] (eV) and forces [N, d] (eV/Å), detached."""
        out = committee(batch, forces=True)
        energy, forces = out.energy.detach(), out.forces.detach()  # [M, B], [M, N, d]
        deviation, e_bias, slope = _bias_terms(energy, batch.n_atoms, strength, width,
                                               per_atom)
        # −∇E_bias = −slope ∇σ²_E with ∇σ²_E = −(2/M) Σ_m (E_m − Ē) F_m
        weights = (slope * deviation * (2.0 / energy.shape[0]))[:, batch.structure]  # [M, N]
        f_bias = (weights.unsqueeze(-1) * forces).sum(0)
        return out.mean_energy.detach() + e_bias, out.mean_forces.detach() + f_bias

    return forces_fn


def seeds_width(committee: Committee, seeds: Batch, width: float) -> float:
    """B (eV) of the ``"seeds"`` width units: B² = width² · ⟨σ²_E / (M N_A)⟩ over ``seeds``
    (σ²_E the committee's energy variance of each seed, eV²; M members, N_A its atoms)."""
    committee.eval()
    with torch.no_grad():
        energy = committee(seeds.without_labels(), forces=False).energy  # [M, B]
    per_atom = energy.var(0, unbiased=False) / seeds.n_atoms.to(energy.dtype)
    return width * float((per_atom.mean() / energy.shape[0]).sqrt())


@dataclass(kw_only=True)
class BiasedMDSampler(MDSampler):
    """Langevin NN-MD on Ē + E_bias (UDD-AL) from every seed; frames become candidates.

    The MD settings mean what they mean for :class:`MDSampler`: temperature_K (K), steps,
    dt_fs (fs), friction_per_fs (1/fs), interval (steps between frames), max_uncertainty
    (trust bound on the unbiased σ²_F, (eV/Å)²; None: none), config (restarts, seed, reduce,
    min_distance, energy_ceiling, progress). The bias (see the module docstring):
    bias_strength: depth A in ``bias_units`` (default 5 k_B T; 0 is plain MD, bit for bit):
    "kT" (A = strength · k_B temperature_K), "kT/atom" (· N_A), "eV/atom" (A = strength · N_A)
    or "eV"; bias_width: B in ``bias_width_units``: "seeds" (default 2: B² = width² times the
    seeds' mean σ²_E / (M N_A)) or "eV".
    """

    bias_strength: float = 5.0
    bias_width: float = 2.0
    bias_units: str = "kT"
    bias_width_units: str = "seeds"
    name: str = "biased_md"

    def __post_init__(self) -> None:
        """Check the trust bound's and the bias settings (units known, strength ≥ 0, width > 0)."""
        super().__post_init__()
        if self.bias_units not in BIAS_UNITS:
            raise ValueError(f"bias_units must be one of {BIAS_UNITS}, not {self.bias_units!r}")
        if self.bias_width_units not in WIDTH_UNITS:
            raise ValueError(f"bias_width_units must be one of {WIDTH_UNITS}, not "
                             f"{self.bias_width_units!r}")
        if not self.bias_strength >= 0:
            raise ValueError("bias_strength must be >= 0")
        if not self.bias_width > 0:
            raise ValueError("bias_width must be positive")

    def bias_amplitude(self) -> tuple[float, bool]:
        """(strength in eV, per_atom) for :func:`biased_committee_forces`."""
        kT = units.kB * self.temperature_K
        return {"kT": (self.bias_strength * kT, False),
                "kT/atom": (self.bias_strength * kT, True),
                "eV/atom": (self.bias_strength, True),
                "eV": (self.bias_strength, False)}[self.bias_units]

    def width_eV(self, committee: Committee, seeds: Batch) -> float:
        """B in eV: ``bias_width`` itself, or scaled by the seeds' energy spread."""
        if self.bias_width_units == "eV":
            return self.bias_width
        width = seeds_width(committee, seeds, self.bias_width)
        if not width > 0:  # identical members: no spread to scale by
            raise ValueError("bias_width_units 'seeds': the committee's members agree exactly "
                             "on the seeds; give the width in eV")
        return width

    def forces_fn(self, committee: Committee, seeds: Batch) -> ForcesFn:
        """The biased committee forces this sampler integrates (B resolved on ``seeds``)."""
        strength, per_atom = self.bias_amplitude()
        width = self.width_eV(committee, seeds)
        log.info("biased MD: depth A = %.4g eV%s, width B = %.4g eV", strength,
                 " per atom" if per_atom else "", width)
        return biased_committee_forces(committee, strength, width, per_atom)
