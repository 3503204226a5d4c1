"""Fit a committee on labelled structures: energy + force loss, validation, early stopping.

Members differ by data as well as by initial weights: member m trains on its own bootstrap
resample of the training split (:func:`member_training_indices`) in its own minibatch order,
with its own Adam, learning-rate schedule, best-validation weights and patience. All members
are validated on the same split; a member whose patience runs out stops training and keeps
its best weights while the others go on. Member m's training depends on m only, so
:func:`fit_members_separately` reproduces :func:`fit` member by member.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from advsample.chunks import chunks
from advsample.committee import Committee
from advsample.models.base import MemberGraph
from advsample.neighbors import select_pairs
from advsample.progress import progress_bar
from advsample.structures import Batch


@dataclass
class TrainConfig:
    """How to fit. Loss = w_E·mean((ΔE/n_atoms/s)²) + w_F·mean((ΔF/s)²), s = energy scale.

    bootstrap: each member trains on its own resample, with replacement, of the training
    split (as many structures as the split); False: every member sees the whole split once
    per epoch. Either way an epoch is ceil(n_train / batch_size) steps for every member.
    """

    epochs: int = 2000
    lr: float = 3e-3
    min_lr: float = 1e-5
    batch_size: int | None = None  # structures per step; None = full batch
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    val_fraction: float = 0.1
    patience: int = 200  # a member stops after this many epochs without validation improvement
    min_epochs: int = 100  # no member stops, or keeps weights from, before this epoch (cold starts)
    lr_patience: int = 50  # epochs without improvement before halving a member's learning rate
    weight_decay: float = 0.0
    seed: int = 0  # validation split, bootstrap resamples, minibatch order
    shuffle_seed: int | None = None  # minibatch order only (default: seed)
    bootstrap: bool = True
    progress: bool = False


@dataclass
class TrainResult:
    """Errors of the committee mean (eV per atom, eV/Å) and the training history.

    member_epochs: epochs each member trained before it stopped; epochs is their maximum.
    history: per epoch, the mean over members of each one's latest validation loss.
    """

    epochs: int
    train_energy_rmse: float
    train_forces_rmse: float
    val_energy_rmse: float
    val_forces_rmse: float
    member_epochs: list[int] = field(default_factory=list)
    history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The fields as a dict, without ``history``."""
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) structure indices; at least one structure in each when n >= 2."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1 if n >= 2 and val_fraction > 0 else 0), n - 1)
    return perm[n_val:], perm[:n_val]


def member_training_indices(n_train: int, cfg: TrainConfig, member: int) -> torch.Tensor:
    """long [n_train]: the structures of the training split that member ``member`` trains on.

    With ``cfg.bootstrap`` a resample with replacement drawn from (cfg.seed, member), else
    arange(n_train). Indices are positions in the training split, not in the whole data.
    """
    if not cfg.bootstrap:
        return torch.arange(n_train)
    draw = np.random.default_rng([cfg.seed, member, 1]).integers(0, n_train, n_train)
    return torch.as_tensor(draw)


def member_order_rng(cfg: TrainConfig, member: int) -> np.random.Generator:
    """Member ``member``'s minibatch-order stream, from (cfg.shuffle_seed or cfg.seed, member)."""
    return np.random.default_rng([cfg.seed if cfg.shuffle_seed is None else cfg.shuffle_seed,
                                  member])


def _losses(energy: torch.Tensor, forces: torch.Tensor | None, batches: list[Batch],
            scale: torch.Tensor, cfg: TrainConfig, real: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Loss of each of K members [K] (dimensionless) from its predictions: energy [K, B] (eV)
    and forces [K, N, d] (eV/Å) on ``batches`` (one per member, or one shared by all), scale
    [K] the members' energy scales s; ``real`` [K, N] marks real atoms of padded forces."""
    return member_losses(energy, forces, *_loss_targets(batches, real, energy.dtype, cfg),
                         scale, cfg.energy_weight, cfg.forces_weight)


def _loss_targets(batches: list[Batch], real: torch.Tensor | None, dtype: torch.dtype,
                  cfg: TrainConfig) -> tuple:
    """(reference energies [K or 1, B] (eV), atom counts [K or 1, B], reference forces
    [K or 1, N, d] (eV/Å, zero on padding; None without a force loss), real-atom weights
    [K or 1, N]) of ``batches``, padded to ``real``'s N when given."""
    ref_energy = torch.stack([b.energy for b in batches]).to(dtype)
    n_atoms = torch.stack([b.n_atoms for b in batches]).to(dtype)
    if real is None:
        real = torch.ones_like(batches[0].numbers, dtype=dtype).unsqueeze(0)
    ref_forces = None
    if cfg.forces_weight > 0:
        ref_forces = torch.zeros(len(batches), real.shape[1], batches[0].dim, dtype=dtype,
                                 device=real.device)
        for k, b in enumerate(batches):
            ref_forces[k, : b.positions.shape[0]] = b.forces
    return ref_energy, n_atoms, ref_forces, real.to(dtype)


def member_losses(energy: torch.Tensor, forces: torch.Tensor | None, ref_energy: torch.Tensor,
                  n_atoms: torch.Tensor, ref_forces: torch.Tensor | None, real: torch.Tensor,
                  scale: torch.Tensor, energy_weight: float, forces_weight: float
                  ) -> torch.Tensor:
    """Loss [K] = w_E·mean_B((ΔE/n_atoms/s)²) + w_F·(ΔF/s)² averaged over real atoms and the d
    components, from energy [K, B] (eV), forces [K, N, d] (eV/Å), the targets of
    :func:`_loss_targets` (broadcast over K when shared) and energy scales s [K] (eV)."""
    de = (energy - ref_energy) / n_atoms / scale.unsqueeze(1)
    loss = energy_weight * de.pow(2).mean(1)
    if forces_weight > 0:
        df = ((forces - ref_forces) / scale.view(-1, 1, 1)).pow(2).sum(-1) * real  # [K, N]
        loss = loss + forces_weight * df.sum(1) / (real.sum(1) * forces.shape[-1])
    return loss


def _step_backward(committee: Committee, active: list[int], batches: list[Batch],
                   pairs: list | None, cfg: TrainConfig) -> torch.Tensor:
    """Training losses [K] of the ``active`` members (member active[k] on ``batches[k]``),
    their gradients accumulated in the members' ``.grad``: all members in one pass when the
    committee is vectorized (through the compiled graph when it compiles derivatives), else
    one after another. Returns the losses, detached."""
    scale = torch.stack([committee.members[m].energy_scale for m in active])
    if committee.compiles_derivatives:
        from advsample.compiled import loss_backward

        graph, real = MemberGraph.padded(batches, pairs)
        dtype = graph.positions.dtype
        return loss_backward(committee, active, graph, member_losses,
                             *_loss_targets(batches, real, dtype, cfg), scale.to(dtype),
                             cfg.energy_weight, cfg.forces_weight)
    if committee.vectorized:
        out, real = committee.forward_members(active, batches, pairs)
        losses = _losses(out.energy, out.forces, batches, scale, cfg, real)
    else:
        per_member = []
        for m, batch in zip(active, batches, strict=True):
            member = committee.members[m]
            with torch.enable_grad():
                pos = batch.positions.detach().requires_grad_(True)
                energy = member(batch.with_positions(pos)).unsqueeze(0)  # [1, B]
                (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=True)
            per_member.append(_losses(energy, -grad.unsqueeze(0), [batch],
                                      scale[len(per_member)].unsqueeze(0), cfg))
        losses = torch.cat(per_member)
    losses.sum().backward()
    return losses.detach()


def validation_losses(committee: Committee, data: Batch, cfg: TrainConfig) -> torch.Tensor:
    """Loss of every member on ``data`` [M] (no graph kept), the members in eval mode."""
    committee.eval()
    out = committee(data.without_labels(), forces=cfg.forces_weight > 0)
    scale = torch.stack([m.energy_scale for m in committee.members])
    return _losses(out.energy.detach(), None if out.forces is None else out.forces.detach(),
                   [data], scale, cfg)


def _resolve_split(n: int, cfg: TrainConfig,
                   split: tuple[torch.Tensor, torch.Tensor] | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices into n structures: ``split`` checked, else split_indices."""
    if split is None:
        return split_indices(n, cfg.val_fraction, cfg.seed)
    train_idx, val_idx = (torch.as_tensor(s, dtype=torch.long).flatten().cpu() for s in split)
    both = torch.cat([train_idx, val_idx])
    if not len(train_idx) or both.min() < 0 or both.max() >= n or len(both.unique()) < len(both):
        raise ValueError(f"split must be non-empty training and disjoint validation indices "
                         f"without repeats in [0, {n})")
    return train_idx, val_idx


def fit(committee: Committee, data: Batch, cfg: TrainConfig | None = None,
        warm_start: bool = False,
        split: tuple[torch.Tensor, torch.Tensor] | None = None) -> TrainResult:
    """Train ``committee`` in place on labelled ``data`` (energy [B] eV, forces [N, d] eV/Å).

    ``split``: (train, validation) indices into ``data`` (default: :func:`split_indices`).
    From scratch (default) the per-element reference energies and scales are refitted on the
    training split; with ``warm_start`` the current weights and statistics are the start and
    compete for each member's best, so a warm start never ends worse on validation.
    """
    return _fit(committee, data, cfg or TrainConfig(), warm_start, split, first_member=0)


def _fit(committee: Committee, data: Batch, cfg: TrainConfig, warm_start: bool,
         split: tuple[torch.Tensor, torch.Tensor] | None, first_member: int) -> TrainResult:
    """:func:`fit` where committee member m draws its data and order as member first_member+m."""
    if data.n_structures == 0 or data.energy is None:
        raise ValueError("training needs a non-empty set of labelled structures")
    if cfg.forces_weight > 0 and data.forces is None:
        raise ValueError("training with forces_weight > 0 needs force labels")
    train_idx, val_idx = _resolve_split(data.n_structures, cfg, split)
    train, val = data.select(train_idx), data.select(val_idx)
    members, size, n_train = list(committee.members), committee.size, train.n_structures
    if not warm_start:
        for member in members:
            member.fit_statistics(train)
    monitor = val if val.n_structures else train
    device = data.positions.device

    own = [member_training_indices(n_train, cfg, first_member + m).to(device)
           for m in range(size)]  # positions in the training split of each member's data
    orders = [member_order_rng(cfg, first_member + m) for m in range(size)]
    # fused: one kernel per member and step (foreach runs a few per parameter tensor on a
    # CPU: a third of a compiled 4-member step); it updates weights without bumping tensor
    # versions, hence committee.weights_changed() after each step
    opts = [torch.optim.Adam(member.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             fused=True)
            for member in members]
    scheds = [torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=cfg.lr_patience, min_lr=cfg.min_lr) for opt in opts]
    pairs = members[0].pairs(train, cached=False)  # built once, reused by every minibatch

    best = validation_losses(committee, monitor, cfg).tolist() if warm_start else [math.inf] * size
    min_epochs = 0 if warm_start else cfg.min_epochs
    best_states = [copy.deepcopy(member.state_dict()) for member in members]
    latest, since_best, member_epochs = list(best), [0] * size, [0] * size
    active, history = list(range(size)), []
    bar = progress_bar(range(cfg.epochs), desc="training", disable=not cfg.progress)
    for _ in bar:
        committee.train()
        chunks = [list(_minibatches(n_train, cfg.batch_size, orders[m], device)) for m in active]
        for step in zip(*chunks, strict=True):  # step k of every active member at once
            index = [own[m] if c is None else own[m][c] for m, c in zip(active, step)]
            batches = [train.select(i) for i in index]
            step_pairs = None if pairs is None else [select_pairs(pairs, train, i)
                                                     for i in index]
            for m in active:
                opts[m].zero_grad(set_to_none=True)
            _step_backward(committee, active, batches, step_pairs, cfg)
            for m in active:
                opts[m].step()
            committee.weights_changed()
        losses = validation_losses(committee, monitor, cfg).tolist()
        for m in active:
            latest[m] = losses[m]
            member_epochs[m] += 1
            # before min_epochs every epoch counts as the best: a validation split whose loss
            # is lowest in the first epochs (one new structure unlike any training one) cannot
            # leave a member with nearly untrained weights (warm starts begin trained)
            if latest[m] < best[m] or member_epochs[m] <= min_epochs:
                best[m], since_best[m] = latest[m], 0
                best_states[m] = copy.deepcopy(members[m].state_dict())
            else:
                since_best[m] += 1
            scheds[m].step(latest[m])
        history.append(float(np.mean(latest)))
        bar.set_postfix(val_loss=f"{history[-1]:.3g}", training=len(active))
        active = [m for m in active if since_best[m] < cfg.patience]
        if not active:
            break
    for member, state in zip(members, best_states):
        member.load_state_dict(state)
    committee.eval()
    return _result(committee, train, val, member_epochs, history)


def _result(committee: Committee, train: Batch, val: Batch, member_epochs: list[int],
            history: list[float]) -> TrainResult:
    """Committee-mean errors on the training and validation structures."""
    tr, va = evaluate(committee, train), evaluate(committee, val) if val.n_structures else {}
    return TrainResult(
        epochs=max(member_epochs),
        train_energy_rmse=tr["energy_rmse"],
        train_forces_rmse=tr["forces_rmse"],
        val_energy_rmse=va.get("energy_rmse", float("nan")),
        val_forces_rmse=va.get("forces_rmse", float("nan")),
        member_epochs=member_epochs,
        history=history,
    )


def fit_members_separately(committee: Committee, data: Batch, cfg: TrainConfig, executor,
                           warm_start: bool = False,
                           split: tuple[torch.Tensor, torch.Tensor] | None = None
                           ) -> TrainResult:
    """Train the members in ``executor.workers`` groups at once through ``executor.map``
    (local processes or Dask workers), each group a committee of its own trained together.

    Member k gets the split, bootstrap resample and minibatch order it gets in :func:`fit`,
    so both give the same weights (to float round-off: a group's batched arithmetic may
    round differently). The members come back as state dicts (tensors only) and are loaded
    in place. The history is :func:`fit`'s: per epoch, the mean over members of each one's
    latest validation loss (a group that stopped keeps its last value).
    """
    from advsample.models import model_name

    train_idx, val_idx = _resolve_split(data.n_structures, cfg, split)
    first = committee.members[0]
    groups = chunks(committee.size, getattr(executor, "workers", 1))
    jobs = [(model_name(first), dict(first.hyperparameters),
             [committee.members[k].state_dict() for k in group], data, cfg, int(group[0]),
             warm_start, (train_idx, val_idx), committee.compile) for group in groups]
    results = executor.map(_fit_member_group, jobs)
    member_epochs = []
    for group, (states, result) in zip(groups, results, strict=True):
        for k, state in zip(group, states, strict=True):
            committee.members[k].load_state_dict(state)
        member_epochs += result.member_epochs
    committee.weights_changed()
    committee.eval()
    epochs = max(len(r.history) for _, r in results)
    padded = np.array([r.history + r.history[-1:] * (epochs - len(r.history))
                       for _, r in results])  # [groups, epochs]
    sizes = np.array([len(group) for group in groups])
    history = (sizes @ padded / committee.size).tolist()
    return _result(committee, data.select(train_idx), data.select(val_idx), member_epochs,
                   history)


def _fit_member_group(job) -> tuple[list[dict], TrainResult]:
    """Worker side of :func:`fit_members_separately`: members first, first + 1, ... as a
    committee of their own."""
    from advsample.executors import worker_threads
    from advsample.models import build_model

    name, hyperparameters, states, data, cfg, first, warm_start, split, compile_ = job
    with worker_threads():
        models = [build_model(name, **hyperparameters) for _ in states]
        for model, state in zip(models, states, strict=True):
            model.load_state_dict(state)
        group = Committee(models)
        group.compile = compile_
        # the first group's bar stands for all (the groups train at the same pace)
        result = _fit(group, data, replace(cfg, progress=cfg.progress and first == 0),
                      warm_start, split, first_member=first)
    return [model.state_dict() for model in models], result


def _minibatches(n: int, batch_size: int | None, rng: np.random.Generator,
                 device: torch.device):
    """Index chunks [<= batch_size] of a random order of n structures; None = all at once."""
    if batch_size is None or batch_size >= n:
        yield None
        return
    perm = torch.as_tensor(rng.permutation(n), device=device)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]


def evaluate(committee: Committee, data: Batch, chunk: int = 4096) -> dict[str, float]:
    """RMSE of the committee mean: energy per atom (eV/atom) and force components (eV/Å)."""
    committee.eval()
    de, df = [], []
    for start in range(0, data.n_structures, chunk):
        part = data.select(torch.arange(start, min(start + chunk, data.n_structures)))
        out = committee(part, forces=part.forces is not None)
        de.append(((out.mean_energy - part.energy) / part.n_atoms).detach())
        if part.forces is not None:
            df.append((out.mean_forces - part.forces).detach().flatten())
    de = torch.cat(de)
    result = {"energy_rmse": float(de.pow(2).mean().sqrt())}
    result["forces_rmse"] = float(torch.cat(df).pow(2).mean().sqrt()) if df else float("nan")
    return result
