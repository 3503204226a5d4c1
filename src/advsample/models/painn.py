"""PaiNN: the polarizable atom interaction neural network (Schütt, Unke, Gastegger, 2021).

Every atom carries scalar features s_i [F] and vector features v_i [3, F]. Starting from an
embedding of the atomic number (s) and zeros (v), each interaction layer applies

  message:  Δs_i = Σ_j φ_s(s_j) ∘ W_s(r_ij)
            Δv_i = Σ_j v_j ∘ φ_vv(s_j) ∘ W_vv(r_ij) + Σ_j φ_vs(s_j) ∘ W_vs(r_ij) r_ij / |r_ij|
  update:   a_vv, a_sv, a_ss = a(s_i, ‖V v_i‖)
            Δv_i = a_vv ∘ U v_i,    Δs_i = a_ss + a_sv ∘ ⟨U v_i, V v_i⟩

with φ and a two-layer SiLU perceptrons, U and V linear maps over features, and the filters
W(r) linear maps (without bias) of a sine basis sin(nπr/r_c)/r times the cosine cutoff
½(cos(πr/r_c) + 1). Every basis function and the cutoff vanish at r_c, and the cutoff's slope
does too, so the energy is twice continuously differentiable as pairs cross r_c: forces and
their derivatives (which attacks use) stay continuous. A readout perceptron maps the final
s_i to atomic energies, summed per structure.

Messages are multiplied by ``neighbor_scale``, 1 / (mean neighbours per atom) fitted in
:meth:`PaiNN.fit_statistics`, so molecules and dense crystals send sums of similar size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advsample.models.base import (
    DTYPES,
    N_ELEMENTS,
    EnergyModel,
    MemberGraph,
    member_linear,
    member_segment_sum,
)
from advsample.neighbors import NeighborList, Pairs, neighbor_pairs, pair_vectors
from advsample.structures import Batch

# Softening of ‖V v‖ = sqrt(|V v|² + ε): the plain norm has a cusp where V v = 0, which
# happens by symmetry (e.g. on the nitrogen of planar NH3), and attacks differentiate the
# forces there; ε sets the feature scale (√ε = 0.01) below which the norm is smoothed.
NORM_EPSILON = 1e-4


def _perceptron(n_in: int, n_hidden: int, n_out: int, dtype: torch.dtype) -> nn.Sequential:
    """Linear → SiLU → Linear, [..., n_in] → [..., n_out]."""
    return nn.Sequential(
        nn.Linear(n_in, n_hidden, dtype=dtype), nn.SiLU(), nn.Linear(n_hidden, n_out, dtype=dtype)
    )


class Message(nn.Module):
    """Equivariant messages from neighbours j to atoms i, added to s [N, F] and v [N, 3, F].

    The first layer has ``vector_input=False``: its atoms have v = 0 still, so only the
    scalar and direction channels are computed (the v_j term vanishes).
    """

    def __init__(self, features: int, n_rbf: int, dtype: torch.dtype, vector_input: bool):
        super().__init__()
        self.features = features
        self.vector_input = vector_input
        n_out = (3 if vector_input else 2) * features
        self.context = _perceptron(features, features, n_out, dtype)  # φ
        self.filter = nn.Linear(n_rbf, n_out, bias=False, dtype=dtype)  # W

    def forward(
        self,
        s: torch.Tensor,
        v: torch.Tensor,
        i: torch.Tensor,
        j: torch.Tensor,
        radial: torch.Tensor,
        direction: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s [N, F], v [N, 3, F]; pairs i, j [P]; radial [P, n_rbf]; direction [P, 3]."""
        x = self.context(s)[j] * self.filter(radial)  # [P, 3F] (or [P, 2F])
        channels = torch.split(x, self.features, dim=-1)  # [P, F] each
        ds, gate_direction = channels[:2]
        dv = direction.unsqueeze(2) * gate_direction.unsqueeze(1)  # [P, 3, F]
        if self.vector_input:
            dv = dv + v[j] * channels[2].unsqueeze(1)
        return s.index_add(0, i, ds), v.index_add(0, i, dv)


class Update(nn.Module):
    """Atom-wise mixing of scalar and vector channels, added to s [N, F] and v [N, 3, F]."""

    def __init__(self, features: int, dtype: torch.dtype):
        super().__init__()
        self.features = features
        self.mix = nn.Linear(features, 2 * features, bias=False, dtype=dtype)  # U and V
        self.gates = _perceptron(2 * features, features, 3 * features, dtype)  # a

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s [N, F], v [N, 3, F]."""
        uv, vv = torch.split(self.mix(v), self.features, dim=-1)  # [N, 3, F] each
        norm = torch.sqrt(vv.pow(2).sum(1) + NORM_EPSILON)  # [N, F]
        a = self.gates(torch.cat([s, norm], dim=-1))
        a_vv, a_sv, a_ss = torch.split(a, self.features, dim=-1)  # [N, F] each
        return s + a_ss + a_sv * (uv * vv).sum(1), v + a_vv.unsqueeze(1) * uv


class PaiNN(EnergyModel):
    """PaiNN energy of molecules and crystals (d = 3).

    features: F, width of scalar and vector channels; interactions: message + update
    layers, each with its own weights; cutoff: r_c (Å); n_rbf: sine basis functions;
    skin: Verlet skin of the cached neighbour list (Å); dtype: "float32" or "float64",
    the precision the network computes in (energies come back in the batch's dtype).
    """

    def __init__(
        self,
        features: int = 64,
        interactions: int = 3,
        cutoff: float = 5.0,
        n_rbf: int = 20,
        skin: float = 0.5,
        dtype: str = "float32",
    ):
        super().__init__(
            features=features,
            interactions=interactions,
            cutoff=cutoff,
            n_rbf=n_rbf,
            skin=skin,
            dtype=dtype,
        )
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.compute_dtype = DTYPES[dtype]
        self.cutoff = float(cutoff)
        self.embedding = nn.Embedding(N_ELEMENTS, features, dtype=self.compute_dtype)
        self.messages = nn.ModuleList(
            [
                Message(features, n_rbf, self.compute_dtype, vector_input=layer > 0)
                for layer in range(interactions)
            ]
        )
        self.updates = nn.ModuleList(
            [Update(features, self.compute_dtype) for _ in range(interactions)]
        )
        self.readout = _perceptron(features, features, 1, self.compute_dtype)
        self.register_buffer(
            "frequencies", math.pi / self.cutoff * torch.arange(1, n_rbf + 1, dtype=torch.float64)
        )  # [n_rbf] (1/Å)
        self.register_buffer("neighbor_scale", torch.ones((), dtype=torch.float64))
        self.neighbors = NeighborList(cutoff, skin)

    def radial(self, distance: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Sine basis × cosine cutoff × neighbour scale, [..., P] (Å) → [..., P, n_rbf] (1/Å).

        ``scale`` (broadcast against distance) replaces this model's neighbour scale."""
        frequencies = self.frequencies.to(distance.dtype)
        basis = torch.sin(distance.unsqueeze(-1) * frequencies) / distance.unsqueeze(-1)
        envelope = 0.5 * (torch.cos(distance * (math.pi / self.cutoff)) + 1.0)
        scale = self.neighbor_scale if scale is None else scale
        return basis * (envelope * scale.to(distance.dtype)).unsqueeze(-1)

    supports_members = True

    def pairs(self, batch: Batch, cached: bool = True) -> Pairs:
        """Pairs within the cutoff: from the Verlet-cached list, or built afresh."""
        return self.neighbors(batch) if cached else neighbor_pairs(batch, self.cutoff)

    @classmethod
    def members_network(cls, first: PaiNN, p: dict[str, torch.Tensor],
                        graph: MemberGraph) -> torch.Tensor:
        """The network of M members at once [M, B]: every linear map is one batched matrix
        product over members and every gather/scatter one call over all members' atoms."""
        m, n = graph.numbers.shape
        f = first.messages[0].features
        offsets = torch.arange(m, device=graph.numbers.device).unsqueeze(1)
        gi = (graph.pairs.i + offsets * n).flatten()  # [M P] atom indices over all members
        gj = (graph.pairs.j + offsets * n).flatten()
        flat_pos = graph.positions.reshape(m * n, 3)
        vectors = (flat_pos[gj] - flat_pos[gi]).view(m, -1, 3) + graph.pairs.shift
        vectors = vectors.to(first.compute_dtype)  # [M, P, 3]
        distance = vectors.pow(2).sum(-1).sqrt()
        direction = vectors / distance.unsqueeze(-1)
        scale = p["neighbor_scale"].unsqueeze(1)  # [M, 1]
        radial = first.radial(distance, scale)  # [M, P, n_rbf]
        if graph.pair_mask is not None:
            radial = radial * graph.pair_mask.unsqueeze(-1).to(radial.dtype)
        table = p["embedding.weight"]  # [M, Z, F]
        s = table.reshape(-1, f)[(graph.numbers + offsets * table.shape[1]).flatten()]
        s = s.view(m, n, f)
        v = s.new_zeros(m, n, 3, f)

        def perceptron(x, name):
            """Every member's two-layer SiLU perceptron ``name`` on x [M, ..., in]."""
            hidden = member_linear(x, p[f"{name}.0.weight"], p[f"{name}.0.bias"])
            return member_linear(torch.nn.functional.silu(hidden), p[f"{name}.2.weight"],
                                 p[f"{name}.2.bias"])

        for layer, message in enumerate(first.messages):
            name = f"messages.{layer}"
            context = perceptron(s, f"{name}.context")  # [M, N, 3F or 2F]
            x = context.reshape(m * n, -1)[gj].view(m, -1, context.shape[-1])
            x = x * member_linear(radial, p[f"{name}.filter.weight"])
            channels = torch.split(x, f, dim=-1)
            dv = direction.unsqueeze(-1) * channels[1].unsqueeze(-2)  # [M, P, 3, F]
            if message.vector_input:
                dv = dv + v.reshape(m * n, 3, f)[gj].view(m, -1, 3, f) * channels[2].unsqueeze(-2)
            s = s.reshape(m * n, f).index_add(0, gi, channels[0].reshape(-1, f)).view(m, n, f)
            v = v.reshape(m * n, 3, f).index_add(0, gi, dv.reshape(-1, 3, f)).view(m, n, 3, f)
            name = f"updates.{layer}"
            uv, vv = torch.split(member_linear(v, p[f"{name}.mix.weight"]), f, dim=-1)
            norm = torch.sqrt(vv.pow(2).sum(-2) + NORM_EPSILON)  # [M, N, F]
            a_vv, a_sv, a_ss = torch.split(perceptron(torch.cat([s, norm], -1),
                                                      f"{name}.gates"), f, dim=-1)
            s = s + a_ss + a_sv * (uv * vv).sum(-2)
            v = v + a_vv.unsqueeze(-2) * uv
        atomic = perceptron(s, "readout").squeeze(-1)  # [M, N]
        energy = member_segment_sum(atomic, graph.structure, graph.n_structures)
        return energy.to(graph.positions.dtype)

    def network(self, batch: Batch) -> torch.Tensor:
        """Sum of atomic energies per structure [B] (dimensionless), in batch.dtype."""
        if batch.dim != 3:
            raise ValueError(f"PaiNN needs 3D coordinates (d = 3), got d = {batch.dim}")
        pairs = self.neighbors(batch)
        vectors = pair_vectors(batch.positions, pairs).to(self.compute_dtype)  # [P, 3]
        distance = vectors.pow(2).sum(1).sqrt()  # [P]
        direction = vectors / distance.unsqueeze(1)  # [P, 3]
        radial = self.radial(distance)  # [P, n_rbf]
        s = self.embedding(batch.numbers)  # [N, F]
        v = s.new_zeros(s.shape[0], 3, s.shape[1])  # [N, 3, F]
        for message, update in zip(self.messages, self.updates, strict=True):
            s, v = message(s, v, pairs.i, pairs.j, radial, direction)
            s, v = update(s, v)
        atomic = self.readout(s).squeeze(1)  # [N]
        energy = atomic.new_zeros(batch.n_structures).index_add(0, batch.structure, atomic)
        return energy.to(batch.dtype)

    @torch.no_grad()
    def fit_statistics(self, batch: Batch) -> None:
        """Reference energies and scale (base class), and 1 / mean neighbours per atom."""
        super().fit_statistics(batch)
        n_pairs = len(neighbor_pairs(batch, self.cutoff).i)
        n_atoms = batch.positions.shape[0]
        self.neighbor_scale.fill_(n_atoms / n_pairs if n_pairs else 1.0)
