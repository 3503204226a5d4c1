"""A multilayer perceptron energy for toy coordinates (d = 1, 2, ...).

Each "atom" of a toy structure is one point; its energy contribution is an MLP of its
coordinates, and the structure's energy is their sum (one point per structure in practice).
The activation is smooth (SiLU by default) because attacks differentiate forces again.
"""

from __future__ import annotations

import torch
from torch import nn

from advsample.models.base import (
    EnergyModel,
    MemberGraph,
    member_linear,
    member_segment_sum,
)
from advsample.structures import Batch

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


class MLPEnergy(EnergyModel):
    """Energy of toy points: E = ε + s · Σ_i MLP((x_i − centre)/width).

    dim: coordinate dimension d; width: hidden units; depth: hidden layers.
    """

    def __init__(self, dim: int = 2, width: int = 64, depth: int = 3, activation: str = "silu"):
        super().__init__(dim=dim, width=width, depth=depth, activation=activation)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        n_in = dim
        for _ in range(depth):  # a new Linear per layer: no shared weights
            layers += [nn.Linear(n_in, width, dtype=torch.float64), ACTIVATIONS[activation]()]
            n_in = width
        layers.append(nn.Linear(n_in, 1, dtype=torch.float64))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("input_centre", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("input_width", torch.ones(dim, dtype=torch.float64))

    def network(self, batch: Batch) -> torch.Tensor:
        """Σ_i MLP((x_i − centre)/width) per structure [B] (dimensionless); x: positions [N, d]."""
        x = (batch.positions - self.input_centre.to(batch.dtype)) / self.input_width.to(batch.dtype)
        per_atom = self.mlp(x.to(self.mlp[0].weight.dtype)).squeeze(-1).to(batch.dtype)
        out = torch.zeros(batch.n_structures, dtype=batch.dtype, device=per_atom.device)
        return out.index_add(0, batch.structure, per_atom)

    supports_members = True

    @classmethod
    def members_network(cls, first: MLPEnergy, p: dict[str, torch.Tensor],
                        graph: MemberGraph) -> torch.Tensor:
        """The network of M members at once [M, B], each layer one batched matrix product."""
        dtype = graph.positions.dtype
        centre, width = (p[k].unsqueeze(1).to(dtype) for k in ("input_centre", "input_width"))
        x = ((graph.positions - centre) / width).to(first.mlp[0].weight.dtype)  # [M, N, d]
        for k, layer in enumerate(first.mlp):
            if isinstance(layer, nn.Linear):
                x = member_linear(x, p[f"mlp.{k}.weight"], p[f"mlp.{k}.bias"])
            else:
                x = layer(x)
        energy = member_segment_sum(x.squeeze(-1), graph.structure, graph.n_structures)
        return energy.to(dtype)

    @torch.no_grad()
    def fit_statistics(self, batch: Batch) -> None:
        """As :meth:`EnergyModel.fit_statistics`, and set the input centre and width [d] to the mean
        and standard deviation of the positions (width at least 1e-3).
        """
        super().fit_statistics(batch)
        self.input_centre.copy_(batch.positions.mean(0))
        if batch.positions.shape[0] > 1:  # the std of one point is undefined: keep width 1
            self.input_width.copy_(batch.positions.std(0).clamp_min(1e-3))
