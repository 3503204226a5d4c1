"""MACE (Batatia et al., NeurIPS 2022) through mace-torch, as an advsample energy model.

Atoms carry equivariant features up to angular momentum L (``max_L``). Each interaction
layer sums over neighbours j tensor products of their features with the spherical harmonics
Y(r̂_ij) (up to ``max_ell``), weighted by a perceptron of a Bessel basis of |r_ij| times a
polynomial cutoff, divides the sum by the average number of neighbours, and builds
many-body features as symmetric products of order ``correlation`` of that sum; readouts map
the invariant part to atomic energies, summed per structure. The polynomial cutoff and its
first two derivatives vanish at r_c, so energies, forces and the forces' derivatives (which
attacks use) stay continuous as pairs cross the cutoff.

Only the network is mace-torch's: neighbour pairs come from :mod:`advsample.neighbors`, so
the Cartesian shifts of periodic images stay differentiable with respect to positions and
cell; MACE's own per-element energies E0 are zero, the reference energies ε and the scale s
of :class:`~advsample.models.base.EnergyModel` apply instead, and forces come from autograd
of the energy in :class:`~advsample.committee.Committee`, not from MACE.

mace-torch is an optional dependency, imported on first use (:func:`import_mace`), never
when advsample is imported.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType

import numpy as np
import torch
from torch import nn

from advsample.models.base import DTYPES, N_ELEMENTS, EnergyModel
from advsample.neighbors import NeighborList, neighbor_pairs
from advsample.structures import Batch

# mace/__init__.py sets this variable to "1" (the e3nn it uses cannot load its own constants
# file with weights_only). Left set, it turns weights_only off for every later torch.load
# that does not pass weights_only explicitly, so import_mace puts it back as it was.
NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
# Warnings about mace's and e3nn's own code, which their users cannot act on: e3nn's
# constants loading without weights_only, and e3nn compiling its tensor products with
# TorchScript (deprecated, and unhappy with some of e3nn's annotations).
THIRD_PARTY_WARNINGS = (
    f"Environment variable {NO_WEIGHTS_ONLY}",
    "`torch.jit.script` is deprecated",
    "The TorchScript type system",
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Inside the block, :data:`THIRD_PARTY_WARNINGS` are ignored and stdout is dropped
    (mace prints a line when cuequivariance is not installed, which would end up in the
    output of the command line)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        for message in THIRD_PARTY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


def import_mace() -> ModuleType:
    """``mace.modules``, imported on first use, leaving os.environ as it was before."""
    before = os.environ.get(NO_WEIGHTS_ONLY)
    try:
        with _quiet():
            return importlib.import_module("mace.modules")
    finally:
        if before is None:
            os.environ.pop(NO_WEIGHTS_ONLY, None)
        else:
            os.environ[NO_WEIGHTS_ONLY] = before


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype set to ``dtype`` inside the block (mace and e3nn build their
    parameters and constants in it), restored afterwards even on error."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _hidden_irreps(channels: int, max_l: int) -> str:
    """``channels`` copies of each irrep l = 0..max_l with parity (−1)^l, e.g. "8x0e+8x1o"."""
    return "+".join(f"{channels}x{l}{'eo'[l % 2]}" for l in range(max_l + 1))


class MACEEnergy(EnergyModel):
    """MACE energy of molecules and crystals (d = 3) made only of ``elements``.

    elements: atomic numbers the model knows, kept sorted and without repeats (atoms of
    any other element raise ValueError);
    cutoff: r_c (Å); channels: features per irrep; max_L: highest angular momentum of the
    node features; max_ell: highest angular momentum of the spherical harmonics of r̂_ij;
    correlation: body order of the symmetric products minus one; interactions: layers;
    n_rbf: Bessel functions; n_polynomial: power p of the polynomial cutoff; radial_mlp:
    hidden widths of the perceptron from the Bessel basis to the tensor-product weights;
    readout_hidden: width of the last, non-linear readout; skin: Verlet skin of the cached
    neighbour list (Å); dtype: "float32" or "float64", the precision the network computes
    in (energies come back in the batch's dtype).

    The average number of neighbours that divides every neighbour sum is a buffer,
    ``avg_num_neighbors``, set by :meth:`fit_statistics` and restored by ``load_state_dict``.
    """

    def __init__(
        self,
        elements: Sequence[int],
        cutoff: float = 5.0,
        channels: int = 32,
        max_L: int = 1,
        max_ell: int = 3,
        correlation: int = 3,
        interactions: int = 2,
        n_rbf: int = 8,
        n_polynomial: int = 5,
        radial_mlp: Sequence[int] = (64, 64, 64),
        readout_hidden: int = 16,
        skin: float = 0.5,
        dtype: str = "float32",
    ):
        elements = sorted({int(z) for z in elements})
        if not elements or elements[0] < 1 or elements[-1] >= N_ELEMENTS:
            raise ValueError(f"elements must be atomic numbers 1..{N_ELEMENTS - 1}, got {elements}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        super().__init__(
            elements=elements,
            cutoff=cutoff,
            channels=channels,
            max_L=max_L,
            max_ell=max_ell,
            correlation=correlation,
            interactions=interactions,
            n_rbf=n_rbf,
            n_polynomial=n_polynomial,
            radial_mlp=[int(w) for w in radial_mlp],
            readout_hidden=readout_hidden,
            skin=skin,
            dtype=dtype,
        )
        self.elements = elements
        self.cutoff = float(cutoff)
        self.compute_dtype = DTYPES[dtype]
        species = torch.full((N_ELEMENTS,), -1, dtype=torch.long)
        species[elements] = torch.arange(len(elements))
        self.register_buffer("species", species, persistent=False)  # Z → row of the one-hot
        self.register_buffer("avg_num_neighbors", torch.ones((), dtype=torch.float64))
        self.register_load_state_dict_post_hook(_apply_avg_num_neighbors)
        self.neighbors = NeighborList(cutoff, skin)

        modules = import_mace()
        from e3nn import o3  # importable now: mace depends on it and has set it up

        block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        with _default_dtype(self.compute_dtype), _quiet():
            self.mace = modules.MACE(
                r_max=self.cutoff,
                num_bessel=n_rbf,
                num_polynomial_cutoff=n_polynomial,
                max_ell=max_ell,
                interaction_cls=block,
                interaction_cls_first=block,
                num_interactions=interactions,
                num_elements=len(elements),
                hidden_irreps=o3.Irreps(_hidden_irreps(channels, max_L)),
                MLP_irreps=o3.Irreps(f"{readout_hidden}x0e"),
                atomic_energies=np.zeros(len(elements)),  # E0 = 0: ε of the base class
                avg_num_neighbors=1.0,
                atomic_numbers=elements,
                correlation=correlation,
                gate=nn.functional.silu,
                radial_MLP=[int(w) for w in radial_mlp],
            )

    def network(self, batch: Batch) -> torch.Tensor:
        """Sum of MACE's atomic energies per structure [B] (dimensionless), in batch.dtype."""
        if batch.dim != 3:
            raise ValueError(f"MACE needs 3D coordinates (d = 3), got d = {batch.dim}")
        species = self.species[batch.numbers]  # [N]
        if (species < 0).any():
            unknown = sorted(set(batch.numbers[species < 0].tolist()))
            raise ValueError(
                f"this MACE model knows elements {self.elements}, got atomic numbers {unknown}"
            )
        pairs = self.neighbors(batch)
        positions = batch.positions.to(self.compute_dtype)  # [N, 3] (Å)
        if not positions.requires_grad:
            # MACE calls requires_grad_() on its positions: keep that off the caller's tensor
            positions = positions.detach()
        data = {
            "positions": positions,
            "node_attrs": nn.functional.one_hot(species, len(self.elements)).to(
                self.compute_dtype
            ),  # [N, n_elements]
            # MACE's edge vectors are positions[receiver] − positions[sender] + shifts, ours
            # r_ij = positions[j] − positions[i] + shift: sender i, receiver j
            "edge_index": torch.stack([pairs.i, pairs.j]),  # [2, P]
            "shifts": pairs.shift.to(self.compute_dtype),  # [P, 3] (Å), differentiable in cell
            "cell": batch.cell.to(self.compute_dtype),  # [B, 3, 3]
            "batch": batch.structure,  # [N]
            "ptr": batch.offsets,  # [B + 1]
        }
        # integer "unit_shifts" are left out: MACE reads them only for virials and stress,
        # which advsample takes by autograd through the shifts instead
        energy = self.mace(data, compute_force=False)["energy"]  # [B]
        return energy.to(batch.dtype)

    @torch.no_grad()
    def fit_statistics(self, batch: Batch) -> None:
        """Reference energies and scale (base class), and the mean neighbours per atom."""
        super().fit_statistics(batch)
        n_pairs = len(neighbor_pairs(batch, self.cutoff).i)
        self.avg_num_neighbors.fill_(n_pairs / batch.positions.shape[0] if n_pairs else 1.0)
        _apply_avg_num_neighbors(self)


def _apply_avg_num_neighbors(model: MACEEnergy, *_: object) -> None:
    """Give MACE's interaction blocks (which hold it as a float) the buffer's value; also
    registered as the model's load_state_dict post-hook."""
    for block in model.mace.interactions:
        block.avg_num_neighbors = float(model.avg_num_neighbors)
