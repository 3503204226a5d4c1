"""Committee passes through torch.compile with their derivatives inside the compiled graph.

Attacks and training need second derivatives: the attack objective is a function of the
forces (themselves −∂E/∂X) and is differentiated again with respect to X; a force-matching
loss is differentiated with respect to the weights. torch.compile cannot differentiate a
compiled graph a second time, so here every derivative is taken with ``torch.func.grad``
*inside* the compiled function: energy → forces → objective (or loss) → its gradient is one
graph that inductor fuses into a few loops, instead of hundreds of small eager kernels, each
with its Python and dispatch overhead. Values equal the eager autograd path to float
round-off (tests/test_compiled.py).

Only for vectorized committees (PaiNN, MLP: ``members_energy`` over stacked weights).
Compiling takes about half a minute to a few minutes per function on a CPU, once per process
(torch's on-disk cache shortens it in later processes); the functions live at module level,
so later committees (new generations) reuse them, and sizes are dynamic from the first call
(:func:`_compile`), so more atoms, other pair counts or fewer active members do not
recompile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from advsample.models.base import MemberGraph
from advsample.neighbors import Pairs


def energy_and_forces(first: torch.nn.Module, weights: dict[str, torch.Tensor],
                      graph: MemberGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies [M, B] (eV) and forces [M, N, d] (eV/Å) of every member by ``torch.func.grad``
    (so that the caller may differentiate them again, inside or outside a compiled graph)."""
    def total(positions):
        """Σ of all members' energies (the forces' potential) and the energies as aux."""
        energy = type(first).members_energy(first, weights, graph._replace(positions=positions))
        return energy.sum(), energy

    grad, energy = torch.func.grad(total, has_aux=True)(graph.positions)
    return energy, -grad


def _shared_graph(positions: torch.Tensor, numbers: torch.Tensor, structure: torch.Tensor,
                  n_structures: int, i: torch.Tensor, j: torch.Tensor, shift: torch.Tensor,
                  members: int) -> MemberGraph:
    """Every member on one batch: positions [N, d] copied per member (contiguous, so that
    each member's forces are its own slice of one gradient); i, j, shift None for models
    without pairs."""
    x = positions.unsqueeze(0).expand(members, *positions.shape).contiguous()
    pairs = None if i is None else Pairs(i, j, shift)
    return MemberGraph.expanded(x, numbers, structure, n_structures, pairs)


def _objective_and_gradient(first, weights, objective, positions, shift, numbers, structure,
                            n_structures, i, j, args):
    """(∂Σv/∂positions [N, d], ∂Σv/∂shift [P, d]) and (v [B], *aux) of
    ``objective(energy, forces, *args) -> (v, *aux)``; without pairs (shift None) only
    (∂Σv/∂positions,) and (v, *aux)."""
    members = weights["energy_scale"].shape[0]

    def total(x, s):
        """Σ v over structures, (v, *aux) as aux."""
        graph = _shared_graph(x, numbers, structure, n_structures, i, j, s, members)
        energy, forces = energy_and_forces(first, weights, graph)
        out = objective(energy, forces, *args)
        return out[0].sum(), out

    if shift is None:
        grad, out = torch.func.grad(lambda x: total(x, None), has_aux=True)(positions)
        return (grad,), out
    return torch.func.grad(total, argnums=(0, 1), has_aux=True)(positions, shift)


def _compile(fn):
    """``fn`` through torch.compile with the sizes that change from call to call dynamic
    from the first call on: every dimension of tensor arguments (atoms, pairs, structures,
    members), and the member dimension (0) of stacked weights (dicts), whose other
    dimensions (features) stay fixed so that their loops are specialised. One compiled
    graph then serves every call, instead of a graph specialised to the first call's sizes
    followed by a recompile."""
    compiled = torch.compile(fn, dynamic=True)

    def call(*args):
        """The compiled ``fn`` on ``args``, their changing sizes marked dynamic first."""
        for t, dims in _dynamic_dims(args):
            for dim in dims:
                torch._dynamo.maybe_mark_dynamic(t, dim)
        return compiled(*args)

    return call


def _dynamic_dims(value, weights: bool = False):
    """(tensor, dimensions to mark dynamic) for every tensor in ``value`` (nested tuples,
    lists and dicts; tensors in dicts are stacked weights: member dimension only)."""
    if isinstance(value, torch.Tensor):
        yield value, (range(min(value.dim(), 1)) if weights else range(value.dim()))
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _dynamic_dims(v, weights)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _dynamic_dims(v, True)


@functools.cache
def _compiled_objective():
    """The compiled :func:`_objective_and_gradient` (one per process)."""
    return _compile(_objective_and_gradient)


def objective_backward(committee, batch, objective: Callable, *args,
                       scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    """``objective(energy [M, B], forces [M, N, d], *args) -> (v [B], *aux)`` on ``batch``
    under the compiled committee; ``scale · Σ v`` is backpropagated to whatever
    ``batch.positions`` (and the periodic shifts, through ``batch.cell``) were computed from,
    as ``(scale * v.sum()).backward()`` would. ``objective`` must be a module-level function
    (the compiled graph is cached per function) taking tensors, ints and strings; floats
    that change between calls should be 0-d tensors, or each new value recompiles.
    Returns (v, *aux), detached.
    """
    committee.evaluated += batch.n_structures
    first = committee.members[0]
    pairs = first.pairs(batch)
    weights = committee.stacked(differentiable=False)
    positions = batch.positions
    i, j, shift = (None, None, None) if pairs is None else pairs
    grads, out = _compiled_objective()(
        first, weights, objective, positions.detach(),
        None if shift is None else shift.detach(), batch.numbers, batch.structure,
        batch.n_structures, i, j, args)
    roots = [(t, g) for t, g in zip((positions, shift), grads, strict=False)
             if t is not None and t.requires_grad]
    if roots:
        torch.autograd.backward([t for t, _ in roots], [scale * g for _, g in roots])
    return tuple(o.detach() for o in out)


def _energy_and_forces_shared(first, weights, positions, numbers, structure, n_structures,
                              i, j, shift):
    """:func:`energy_and_forces` of every member on one batch (positions [N, d])."""
    members = weights["energy_scale"].shape[0]
    graph = _shared_graph(positions, numbers, structure, n_structures, i, j, shift, members)
    return energy_and_forces(first, weights, graph)


@functools.cache
def _compiled_forces():
    """The compiled :func:`_energy_and_forces_shared` (one per process)."""
    return _compile(_energy_and_forces_shared)


def committee_forces(committee, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies [M, B] (eV) and forces [M, N, d] (eV/Å) of every member on ``batch`` through
    the compiled graph (NN-MD, evaluation); no gradient reaches positions or weights."""
    first = committee.members[0]
    pairs = first.pairs(batch)
    i, j, shift = (None, None, None) if pairs is None else pairs
    with torch.no_grad():
        return _compiled_forces()(first, committee.stacked(differentiable=False),
                                  batch.positions, batch.numbers, batch.structure,
                                  batch.n_structures, i, j, shift)


def _loss_gradient(first, parameters, buffers, loss, positions, numbers, structure,
                   n_structures, pairs, pair_mask, args):
    """∂Σ loss/∂parameters (name -> [K, ...]) and the losses [K] of
    ``loss(energy [K, B], forces [K, N, d], *args) -> [K]``, each of the K members on its own
    padded structures."""
    def total(params):
        """Σ of the members' losses, and the losses as aux."""
        graph = MemberGraph(positions, numbers, structure, n_structures, pairs, pair_mask)
        energy, forces = energy_and_forces(first, params | buffers, graph)
        losses = loss(energy, forces, *args)
        return losses.sum(), losses

    return torch.func.grad(total, has_aux=True)(parameters)


@functools.cache
def _compiled_loss():
    """The compiled :func:`_loss_gradient` (one per process)."""
    return _compile(_loss_gradient)


def loss_backward(committee, members: list[int], graph: MemberGraph, loss: Callable,
                  *args) -> torch.Tensor:
    """Training losses [K] of ``members`` (member members[k] on slice k of the padded
    ``graph``) by ``loss(energy, forces, *args) -> [K]`` under the compiled committee, their
    gradients stored in each member's ``.grad`` as ``losses.sum().backward()`` would (added
    to existing ones). ``loss``: a module-level function, as for :func:`objective_backward`.
    """
    names = committee.parameter_names()
    stacked = committee.stacked(members, differentiable=False)  # detached
    parameters = {n: stacked[n] for n in names}
    buffers = {n: t for n, t in stacked.items() if n not in parameters}
    grads, losses = _compiled_loss()(
        committee.members[members[0]], parameters, buffers, loss, graph.positions.detach(),
        graph.numbers, graph.structure, graph.n_structures, graph.pairs, graph.pair_mask, args)
    for k, m in enumerate(members):
        tensors = committee.member_tensors(m)
        for name in names:
            p, g = tensors[name], grads[name][k]  # g: a view of this step's gradient stack
            p.grad = g if p.grad is None else p.grad + g
    return losses.detach()
