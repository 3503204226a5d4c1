"""Fit a committee on labelled structures: energy + force loss, validation, early stopping.

All members train at once: their losses are summed into one backward pass (members share no
parameters, so each still follows its own gradient), one Adam over all parameters, and each
member keeps the weights of its own best validation epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from advsample.committee import Committee
from advsample.structures import Batch


@dataclass
class TrainConfig:
    """How to fit. Loss = w_E·mean((ΔE/n_atoms/s)²) + w_F·mean((ΔF/s)²), s = energy scale."""

    epochs: int = 2000
    lr: float = 3e-3
    min_lr: float = 1e-5
    batch_size: int | None = None  # structures per step; None = full batch
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    val_fraction: float = 0.1
    patience: int = 200  # epochs without validation improvement before stopping
    lr_patience: int = 50  # epochs without improvement before halving the learning rate
    weight_decay: float = 0.0
    seed: int = 0  # validation split, minibatch order
    shuffle_seed: int | None = None  # minibatch order only (default: seed)
    progress: bool = False


@dataclass
class TrainResult:
    """Errors of the committee mean (eV per atom, eV/Å) and the training history."""

    epochs: int
    train_energy_rmse: float
    train_forces_rmse: float
    val_energy_rmse: float
    val_forces_rmse: float
    history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) structure indices; at least one structure in each when n >= 2."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1 if n >= 2 and val_fraction > 0 else 0), n - 1)
    return perm[n_val:], perm[:n_val]


def _member_losses(committee: Committee, batch: Batch, cfg: TrainConfig, scale: float,
                   create_graph: bool = True) -> torch.Tensor:
    """Loss of each member [M] on ``batch``; create_graph to back-propagate through forces."""
    out = committee(batch, forces=cfg.forces_weight > 0, create_graph=create_graph)
    n_atoms = batch.n_atoms.to(out.energy.dtype)
    de = (out.energy - batch.energy.to(out.energy.dtype)) / n_atoms / scale  # [M, B]
    loss = cfg.energy_weight * de.pow(2).mean(1)
    if cfg.forces_weight > 0:
        df = (out.forces - batch.forces.to(out.forces.dtype)) / scale  # [M, N, d]
        loss = loss + cfg.forces_weight * df.pow(2).mean((1, 2))
    return loss  # [M]


def fit(committee: Committee, data: Batch, cfg: TrainConfig | None = None,
        warm_start: bool = False) -> TrainResult:
    """Train ``committee`` in place on labelled ``data`` (energy [B], forces [N, d]).

    From scratch (default) the per-element reference energies and scales are refitted on the
    training split; with ``warm_start`` the current weights and statistics are the start.
    """
    cfg = cfg or TrainConfig()
    if data.n_structures == 0 or data.energy is None:
        raise ValueError("training needs a non-empty set of labelled structures")
    if cfg.forces_weight > 0 and data.forces is None:
        raise ValueError("training with forces_weight > 0 needs force labels")
    train_idx, val_idx = split_indices(data.n_structures, cfg.val_fraction, cfg.seed)
    train, val = data.select(train_idx), data.select(val_idx)
    if not warm_start:
        for m in committee.members:
            m.fit_statistics(train)
    scale = float(committee.members[0].energy_scale)
    monitor = val if val.n_structures else train

    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(committee.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=cfg.lr_patience, min_lr=cfg.min_lr
    )
    best = torch.full((committee.size,), float("inf"))
    if warm_start:  # the starting weights compete: a warm start never ends worse than it began
        committee.eval()
        best = _member_losses(committee, monitor, cfg, scale, create_graph=False).detach()
    best_states = [copy.deepcopy(m.state_dict()) for m in committee.members]
    since_best, history, epochs_run = 0, [], 0
    rng = np.random.default_rng(cfg.seed if cfg.shuffle_seed is None else cfg.shuffle_seed)
    bar = tqdm(range(cfg.epochs), desc="training", disable=not cfg.progress, leave=False)
    for epoch in bar:
        epochs_run = epoch + 1
        committee.train()
        for chunk in _minibatches(train.n_structures, cfg.batch_size, rng):
            part = train if chunk is None else train.select(chunk)
            opt.zero_grad(set_to_none=True)
            _member_losses(committee, part, cfg, scale).sum().backward()
            opt.step()
        committee.eval()
        val_loss = _member_losses(committee, monitor, cfg, scale, create_graph=False).detach()
        history.append(float(val_loss.mean()))
        improved = val_loss < best
        for m in torch.nonzero(improved).flatten().tolist():
            best[m] = val_loss[m]
            best_states[m] = copy.deepcopy(committee.members[m].state_dict())
        since_best = 0 if improved.any() else since_best + 1
        sched.step(float(val_loss.sum()))
        bar.set_postfix(val_loss=f"{history[-1]:.3g}")
        if since_best >= cfg.patience:
            break
    for m, state in zip(committee.members, best_states):
        m.load_state_dict(state)
    committee.eval()
    tr, va = evaluate(committee, train), evaluate(committee, val) if val.n_structures else {}
    return TrainResult(
        epochs=epochs_run,
        train_energy_rmse=tr["energy_rmse"],
        train_forces_rmse=tr["forces_rmse"],
        val_energy_rmse=va.get("energy_rmse", float("nan")),
        val_forces_rmse=va.get("forces_rmse", float("nan")),
        history=history,
    )


def fit_members_separately(committee: Committee, data: Batch, cfg: TrainConfig,
                           executor, warm_start: bool = False) -> TrainResult:
    """Train each member on its own through ``executor.map`` (e.g. one per Dask worker).

    Every member sees the same training/validation split as in :func:`fit`; its minibatch
    order follows ``cfg.seed + m``. The members come back as state dicts (tensors only) and
    are loaded in place. The history holds the mean best validation loss.
    """
    from advsample.models import model_name

    first = committee.members[0]
    jobs = [(model_name(first), dict(first.hyperparameters), m.state_dict(), data, cfg, k,
             warm_start) for k, m in enumerate(committee.members)]
    results = executor.map(_fit_one_member, jobs)
    for member, (state, _) in zip(committee.members, results):
        member.load_state_dict(state)
    committee.eval()
    train_idx, val_idx = split_indices(data.n_structures, cfg.val_fraction, cfg.seed)
    tr = evaluate(committee, data.select(train_idx))
    va = evaluate(committee, data.select(val_idx)) if len(val_idx) else {}
    return TrainResult(
        epochs=max(r.epochs for _, r in results),
        train_energy_rmse=tr["energy_rmse"],
        train_forces_rmse=tr["forces_rmse"],
        val_energy_rmse=va.get("energy_rmse", float("nan")),
        val_forces_rmse=va.get("forces_rmse", float("nan")),
        history=[float(np.mean([min(r.history) for _, r in results]))],
    )


def _fit_one_member(job) -> tuple[dict, TrainResult]:
    """Worker side of :func:`fit_members_separately`: one member as a committee of one."""
    from advsample.models import build_model

    name, hyperparameters, state, data, cfg, index, warm_start = job
    torch.set_num_threads(1)
    model = build_model(name, **hyperparameters)
    model.load_state_dict(state)
    single = Committee([model])
    result = fit(single, data, replace(cfg, shuffle_seed=cfg.seed + index, progress=False),
                 warm_start=warm_start)
    return model.state_dict(), result


def _minibatches(n: int, batch_size: int | None, rng: np.random.Generator):
    if batch_size is None or batch_size >= n:
        yield None
        return
    perm = torch.as_tensor(rng.permutation(n))
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
