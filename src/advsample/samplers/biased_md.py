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

Units of the strength (``bias_units``), so that one value works across systems:

- ``"eV/atom"`` (default): A = bias_strength · N_A. The bias energy is then extensive like the
  energy itself and the bias force on an atom intensive: σ²_E of independent atomic errors
  is a sum of local terms, so s and, on average over committees, F_bias on an atom do not
  grow with system size.
- ``"kT/atom"``: A = bias_strength · N_A · k_B T with T the thermostat temperature: the depth
  per atom in thermal energies, the natural scale of how strongly the bias reweights
  configurations (by up to exp(A / k_B T)).
- ``"eV"``: A = bias_strength, UDD-AL's raw parameter (tuned per system).

B = ``bias_width`` is in eV: the energy spread (per √(member · atom)) over which the bias
switches on. Defaults A = 0.1 eV/atom, B = 0.01 eV, chosen on NH3 (4 atoms) with a committee
of 4 PaiNN (32 features, 2 interactions) trained on the paper's 138 frames, whose energy
spread along plain NN-MD is σ_E ≈ 0.01 eV (median) to 0.03 eV (90th percentile): B = 0.01 eV
puts the strongest pull at σ_E ≈ 0.03 eV, the upper edge of what plain MD visits, and
A = 0.4 eV in total (≈ 1.5 × the 0.27 eV inversion barrier; 4 k_B T per atom at 300 K) is
deep enough to change where the trajectories go yet bounded. Measured there (12 runs of 1 ps
from 6 seeds): the mean σ²_F of the frames rose ×3 at 300 K and ×4 at 600 K over plain MD,
near-planar frames (|umbrella height| < 0.1 Å) from 7 % to 21 % and from 3 % to 27 %, the
median energy by 0.03 and 0.1 eV; A = 0.05 eV/atom had little effect at 300 K and
A = 0.2 eV/atom lifted the median energy by 0.4 eV. Starting points: UDD-AL tuned A and B
per system; B is the one to retune for other committees (scale it with their σ_E).

Candidates are scored exactly like those of the MD sampler, on the UNBIASED committee
(objective log L, σ²_F, mean energy Ē), and the same trust bound (max_uncertainty on σ²_F)
and sanity filters stop a trajectory, so the same selection applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ase import units

from advsample.committee import Committee
from advsample.dynamics import ForcesFn
from advsample.samplers.md import MDSampler
from advsample.structures import Batch

BIAS_UNITS = ("eV/atom", "kT/atom", "eV")
"""Accepted units of ``BiasedMDSampler.bias_strength`` (see the module docstring)."""


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


@dataclass(kw_only=True)
class BiasedMDSampler(MDSampler):
    """Langevin NN-MD on Ē + E_bias (UDD-AL) from every seed; frames become candidates.

    The MD settings mean what they mean for :class:`MDSampler`: temperature_K (K), steps,
    dt_fs (fs), friction_per_fs (1/fs), interval (steps between frames), max_uncertainty
    (trust bound on the unbiased σ²_F, (eV/Å)²; None: none), config (restarts, seed, reduce,
    min_distance, energy_ceiling, progress). The bias:
    bias_strength: depth A of the bias, in ``bias_units`` (default 0.1 eV/atom; 0 is plain
    MD, bit for bit); bias_width: B (eV, default 0.01); bias_units: "eV/atom" (A = strength ·
    N_A), "kT/atom" (A = strength · N_A · k_B temperature_K) or "eV" (A = strength).
    """

    bias_strength: float = 0.1
    bias_width: float = 0.01
    bias_units: str = "eV/atom"
    name: str = "biased_md"

    def __post_init__(self) -> None:
        """Check the bias settings (units known, strength ≥ 0, width > 0)."""
        if self.bias_units not in BIAS_UNITS:
            raise ValueError(f"bias_units must be one of {BIAS_UNITS}, not {self.bias_units!r}")
        if not self.bias_strength >= 0:
            raise ValueError("bias_strength must be >= 0")
        if not self.bias_width > 0:
            raise ValueError("bias_width must be positive")

    def bias_amplitude(self) -> tuple[float, bool]:
        """(strength in eV, per_atom) for :func:`biased_committee_forces`."""
        if self.bias_units == "kT/atom":
            return self.bias_strength * units.kB * self.temperature_K, True
        return self.bias_strength, self.bias_units == "eV/atom"

    def forces_fn(self, committee: Committee) -> ForcesFn:
        """The biased committee forces this sampler integrates."""
        strength, per_atom = self.bias_amplitude()
        return biased_committee_forces(committee, strength, self.bias_width, per_atom)
