"""What every energy model shares: per-element reference energies and an energy scale.

A model predicts E(X) = Σ_i ε_{Z_i} + s · f(X), where ε are per-element reference energies
(eV) fitted by least squares on the training set, s an energy scale (eV) and f the network.
Fitting ε and s from data lets the network learn O(1) numbers even on raw quantum-chemistry
energies of -1,500 eV per molecule.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import torch
from torch import nn

from advsample.neighbors import Pairs
from advsample.structures import Batch

N_ELEMENTS = 119  # atomic numbers 0..118; 0 is the toy "element"
DTYPES = {"float32": torch.float32, "float64": torch.float64}  # a model's compute precision


class MemberGraph(NamedTuple):
    """What M members see at once: one set of structures per member, padded to equal sizes.

    positions: [M, N, d] (Å); numbers, structure: long [M, N], structure in 0..B-1 and B for
    padding atoms; n_structures: B per member; pairs: i, j long [M, P] (atom indices within
    a member's N), shift [M, P, 3] (Å), or None for models without pairs; pair_mask: float
    [M, P], 0 for padding pairs (None: no padding). When every member sees the same batch
    (committee evaluation, attacks, NN-MD) the integer fields are expanded views, not copies.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    structure: torch.Tensor
    n_structures: int
    pairs: Pairs | None = None
    pair_mask: torch.Tensor | None = None

    @classmethod
    def shared(cls, batch: Batch, positions: torch.Tensor, pairs: Pairs | None) -> MemberGraph:
        """Every member on ``batch``; ``positions`` [M, N, d] (per-member copies, so that
        each member's forces come out of one backward pass)."""
        return cls.expanded(positions, batch.numbers, batch.structure, batch.n_structures,
                            pairs)

    @classmethod
    def expanded(cls, positions: torch.Tensor, numbers: torch.Tensor, structure: torch.Tensor,
                 n_structures: int, pairs: Pairs | None) -> MemberGraph:
        """:meth:`shared` from a batch's tensors (numbers, structure long [N]; pairs of the
        batch or None), as compiled code passes them."""
        m = positions.shape[0]
        if pairs is not None:
            pairs = Pairs(pairs.i.expand(m, -1), pairs.j.expand(m, -1),
                          pairs.shift.expand(m, -1, -1))
        return cls(positions, numbers.expand(m, -1), structure.expand(m, -1), n_structures,
                   pairs)

    @classmethod
    def padded(cls, batches: list[Batch], pairs: list[Pairs] | None) -> tuple[MemberGraph,
                                                                              torch.Tensor]:
        """Member m on ``batches[m]`` (equal structure counts B) with ``pairs[m]``, padded to
        the largest atom and pair counts; also the bool mask [M, N] of real atoms. Padding
        atoms belong to structure B (dropped), padding pairs join atom 0 to itself through a
        1 Å shift and are masked out."""
        b = batches[0].n_structures
        if any(x.n_structures != b for x in batches):
            raise ValueError("every member needs the same number of structures")
        n = max(x.positions.shape[0] for x in batches)
        ref = batches[0].positions

        def pad(t: torch.Tensor, size: int, value) -> torch.Tensor:
            """``t`` extended along its first dimension to ``size`` with ``value``."""
            extra = t.new_full((size - t.shape[0], *t.shape[1:]), value)
            return torch.cat([t, extra])

        positions = torch.stack([pad(x.positions, n, 0.0) for x in batches])
        numbers = torch.stack([pad(x.numbers, n, 0) for x in batches])
        structure = torch.stack([pad(x.structure, n, b) for x in batches])
        real = torch.stack([pad(torch.ones_like(x.numbers, dtype=torch.bool), n, False)
                            for x in batches])
        stacked_pairs = mask = None
        if pairs is not None:
            p = max(len(q.i) for q in pairs)
            unit = ref.new_zeros(3)
            unit[0] = 1.0
            stacked_pairs = Pairs(torch.stack([pad(q.i, p, 0) for q in pairs]),
                                  torch.stack([pad(q.j, p, 0) for q in pairs]),
                                  torch.stack([torch.cat([q.shift, unit.expand(p - len(q.i), 3)])
                                               for q in pairs]))
            mask = torch.stack([pad(torch.ones_like(q.i, dtype=ref.dtype), p, 0.0)
                                for q in pairs])
        return cls(positions, numbers, structure, b, stacked_pairs, mask), real


def member_linear(x: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """Each member's linear map in one batched matrix product: x [M, ..., in], weight
    [M, out, in] (nn.Linear layout), bias [M, out] -> [M, ..., out]."""
    m, n_in = x.shape[0], x.shape[-1]
    flat = x.reshape(m, -1, n_in)
    if bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(*x.shape[:-1], weight.shape[1])


def member_segment_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Per-member sums of values [M, N] into ``size`` bins by index long [M, N] -> [M, size];
    indices equal to ``size`` (padding) are dropped."""
    m = values.shape[0]
    offsets = torch.arange(m, device=values.device).unsqueeze(1) * (size + 1)
    out = values.new_zeros(m * (size + 1)).index_add(0, (index + offsets).flatten(),
                                                     values.flatten())
    return out.view(m, size + 1)[:, :size]


class EnergyModel(nn.Module, abc.ABC):
    """Base class: subclasses implement ``network(batch) -> [B]`` (dimensionless).

    ``forward(batch)`` returns energies [B] in eV. ``hyperparameters`` are what the
    constructor was called with, so a checkpoint rebuilds the model without pickled code.
    """

    def __init__(self, **hyperparameters):
        super().__init__()
        self.hyperparameters = dict(hyperparameters)
        self.register_buffer("element_energy", torch.zeros(N_ELEMENTS, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))

    @abc.abstractmethod
    def network(self, batch: Batch) -> torch.Tensor:
        """Dimensionless energy [B] before scaling and reference shift."""

    def reference_energy(self, batch: Batch) -> torch.Tensor:
        """Σ_i ε_{Z_i} per structure [B] (eV)."""
        ref = self.element_energy.to(batch.dtype)[batch.numbers]
        out = torch.zeros(batch.n_structures, dtype=batch.dtype, device=ref.device)
        return out.index_add(0, batch.structure, ref)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Energies [B] (eV): Σ_i ε_{Z_i} + s · network(batch)."""
        scale = self.energy_scale.to(batch.dtype)
        return self.reference_energy(batch) + scale * self.network(batch)

    # Subclasses that evaluate M members at once set this and define the classmethod
    # ``members_network(first, stacked, graph) -> [M, B]`` (dimensionless): ``first`` any
    # member (for its hyperparameters), ``stacked`` every member's parameters and buffers
    # (``Committee.stacked``). Models without it (MACE) are evaluated one member at a time.
    supports_members = False

    def pairs(self, batch: Batch, cached: bool = True) -> Pairs | None:
        """Neighbour pairs the network needs (None: it needs none); ``cached`` may reuse a
        Verlet list kept between calls."""
        return None

    @classmethod
    def members_energy(cls, first: EnergyModel, stacked: dict[str, torch.Tensor],
                       graph: MemberGraph) -> torch.Tensor:
        """Energies [M, B] (eV) of every member on its structures of ``graph``: reference
        energies plus scaled network, as :meth:`forward` computes for one member (only for
        models with ``supports_members``)."""
        dtype = graph.positions.dtype
        per_atom = torch.gather(stacked["element_energy"].to(dtype), 1, graph.numbers)
        reference = member_segment_sum(per_atom, graph.structure, graph.n_structures)
        scale = stacked["energy_scale"].to(dtype).unsqueeze(1)  # [M, 1]
        return reference + scale * cls.members_network(first, stacked, graph)

    @torch.no_grad()
    def fit_statistics(self, batch: Batch) -> None:
        """Set ε by least squares on the labelled ``batch`` and s from the residuals and forces."""
        reference, residual = fit_element_energies(batch)
        self.element_energy.copy_(reference)
        spread = residual.std() if residual.numel() > 1 else residual.new_tensor(1.0)
        if batch.forces is not None and batch.forces.numel():
            spread = torch.maximum(spread, batch.forces.pow(2).mean().sqrt())
        self.energy_scale.fill_(float(spread) if float(spread) > 1e-8 else 1.0)


def fit_element_energies(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares per-element energies ε [119] and the residual energies [B].

    Solves min_ε Σ_k (E_k − Σ_{i∈k} ε_{Z_i})² over the labelled structures; elements absent
    from ``batch`` get ε = 0. With one composition only this puts the mean energy on it.
    The small least-squares problem is solved in float64 on the CPU (torch's rank-revealing
    driver gelsd has no GPU version); both results are float64 on the batch's device.
    """
    if batch.energy is None:
        raise ValueError("fitting reference energies needs labelled energies")
    structure, numbers = batch.structure.cpu(), batch.numbers.cpu()
    counts = torch.zeros(batch.n_structures, N_ELEMENTS, dtype=torch.float64, device="cpu")
    counts.index_put_(
        (structure, numbers), torch.ones_like(structure, dtype=torch.float64), accumulate=True
    )
    present = counts.sum(0) > 0
    a = counts[:, present]
    e = batch.energy.detach().cpu().to(torch.float64)
    solution = torch.linalg.lstsq(a, e.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    eps = torch.zeros(N_ELEMENTS, dtype=torch.float64, device="cpu")
    eps[present] = solution
    return eps.to(batch.device), (e - a @ solution).to(batch.device)
