import copy
import math

import numpy as np
import pytest
import torch

from advsample.committee import Committee
from advsample.oracles.analytic import DoubleWell2D
from advsample.structures import Batch
from advsample.train import (
    TrainConfig,
    evaluate,
    fit,
    fit_members_separately,
    member_order_rng,
    member_training_indices,
    split_indices,
)


def toy_data(n: int, seed: int, energy_max: float = 0.0) -> Batch:
    """Labelled uniform points of the 2D double well with true energy below ``energy_max``."""
    surface = DoubleWell2D()
    x = np.random.default_rng(seed).uniform(*surface.box, size=(n, surface.dim))
    return surface.label(Batch.from_points(x[surface.energy(x) < energy_max]))


def spy_on_members(committee: Committee, data: Batch, monkeypatch) -> tuple[list, list]:
    """Record what each member trains on and its weights at each validation.

    Returns (batches, weights): batches[m] lists, per training step of member m, the indices
    into ``data`` of the structures it trained on (vectorized committees report them through
    ``forward_members``, others through each member's forward in training mode); weights[m]
    its state dict at each validation.
    """
    import advsample.train as train_module

    where = {tuple(p): i for i, p in enumerate(data.positions.tolist())}
    batches, weights = [[] for _ in committee.members], [[] for _ in committee.members]

    def indices(batch):
        return [where[tuple(p)] for p in batch.positions.tolist()]

    forward_members = committee.forward_members

    def spy_members(members, step_batches, pairs):
        for m, batch in zip(members, step_batches, strict=True):
            batches[m].append(indices(batch))
        return forward_members(members, step_batches, pairs)

    committee.forward_members = spy_members
    for m, member in enumerate(committee.members):
        def spy(batch, m=m, member=member, forward=member.forward):
            if member.training:
                batches[m].append(indices(batch))
            return forward(batch)

        member.forward = spy
    validation = train_module.validation_losses

    def spy_validation(committee_, data_, cfg):
        for m, member in enumerate(committee_.members):
            weights[m].append({k: v.clone() for k, v in member.state_dict().items()})
        return validation(committee_, data_, cfg)

    monkeypatch.setattr(train_module, "validation_losses", spy_validation)
    return batches, weights


def test_training_lowers_validation_error():
    data = toy_data(600, seed=1)
    committee = Committee.build("mlp", 3, dim=2, width=32, depth=2)
    cfg = TrainConfig(epochs=300, patience=1000, seed=2)
    train_idx, val_idx = split_indices(data.n_structures, cfg.val_fraction, cfg.seed)
    for m in committee.members:
        m.fit_statistics(data.select(train_idx))
    before = evaluate(committee, data.select(val_idx))
    result = fit(committee, data, cfg)
    assert result.val_energy_rmse < 0.2 * before["energy_rmse"]
    assert result.val_forces_rmse < 0.2 * before["forces_rmse"]
    assert result.member_epochs == [300] * 3 and result.as_dict()["member_epochs"] == [300] * 3
    # members keep distinct weights after training
    w0, w1 = (m.mlp[0].weight for m in committee.members[:2])
    assert not torch.allclose(w0, w1)


def test_split_is_reproducible_and_disjoint():
    a, b = split_indices(50, 0.2, seed=3)
    c, d = split_indices(50, 0.2, seed=3)
    assert torch.equal(a, c) and torch.equal(b, d)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(b) == 10


def test_each_member_trains_on_its_own_bootstrap_resample(monkeypatch):
    data = toy_data(120, seed=3)
    cfg = TrainConfig(epochs=2, batch_size=8, patience=1000, seed=4)
    committee = Committee.build("mlp", 2, dim=2, width=8, depth=1)
    batches, _ = spy_on_members(committee, data, monkeypatch)
    fit(committee, data, cfg)
    train_idx, _ = split_indices(data.n_structures, cfg.val_fraction, cfg.seed)
    n_train, steps = len(train_idx), math.ceil(len(train_idx) / cfg.batch_size)
    resamples = [sorted(train_idx[member_training_indices(n_train, cfg, m)].tolist())
                 for m in range(2)]
    assert resamples[0] != resamples[1]
    assert all(len(r) == n_train and len(set(r)) < n_train for r in resamples)  # replacement
    for m in range(2):
        assert len(batches[m]) == 2 * steps
        for epoch in range(2):
            seen = sum(batches[m][epoch * steps:(epoch + 1) * steps], [])
            assert sorted(seen) == resamples[m]
    assert batches[0][0] != batches[1][0]


def test_without_bootstrap_every_member_sees_the_split_once_per_epoch_in_its_own_order(monkeypatch):
    data = toy_data(120, seed=3)
    cfg = TrainConfig(epochs=2, batch_size=8, patience=1000, seed=4, bootstrap=False)
    committee = Committee.build("mlp", 2, dim=2, width=8, depth=1)
    batches, _ = spy_on_members(committee, data, monkeypatch)
    fit(committee, data, cfg)
    train_idx, _ = split_indices(data.n_structures, cfg.val_fraction, cfg.seed)
    n_train, steps = len(train_idx), math.ceil(len(train_idx) / cfg.batch_size)
    assert torch.equal(member_training_indices(n_train, cfg, 1), torch.arange(n_train))
    for m in range(2):
        rng = member_order_rng(cfg, m)
        for epoch in range(2):
            seen = sum(batches[m][epoch * steps:(epoch + 1) * steps], [])
            assert seen == train_idx[rng.permutation(n_train)].tolist()
    assert batches[0][:steps] != batches[1][:steps]
    assert batches[0][:steps] != batches[0][steps:]


def test_a_member_stops_on_its_own_and_keeps_its_best_weights(monkeypatch):
    data = toy_data(120, seed=3)
    cfg = TrainConfig(epochs=300, lr=3e-2, patience=5, batch_size=16, val_fraction=0.3, seed=4,
                      min_epochs=0)
    committee = Committee.build("mlp", 2, dim=2, width=16, depth=2, seed=1)
    batches, weights = spy_on_members(committee, data, monkeypatch)
    result = fit(committee, data, cfg)
    early, late = np.argsort(result.member_epochs)
    n_early, n_late = result.member_epochs[early], result.member_epochs[late]
    assert n_early + cfg.patience < n_late < cfg.epochs and result.epochs == n_late
    train_idx, val_idx = split_indices(data.n_structures, cfg.val_fraction, cfg.seed)
    steps = math.ceil(len(train_idx) / cfg.batch_size)
    # the stopped member took no step after its last epoch while the other went on
    assert len(batches[early]) == n_early * steps and len(batches[late]) == n_late * steps
    # its final weights are those of its best validation epoch, `patience` epochs before the end
    probe = Committee.build("mlp", 1, dim=2, width=16, depth=2)
    losses = []
    for state in weights[early][:n_early]:  # one state per validation
        probe.members[0].load_state_dict(state)
        errors = evaluate(probe, data.select(val_idx))
        losses.append(errors["energy_rmse"] ** 2 + errors["forces_rmse"] ** 2)
    best = int(np.argmin(losses))
    assert best == n_early - 1 - cfg.patience
    for name, value in committee.members[early].state_dict().items():
        assert torch.equal(value, weights[early][best][name])


def test_a_given_split_is_respected_and_checked(monkeypatch):
    data = toy_data(120, seed=5)
    n = data.n_structures
    val_idx = torch.arange(0, n, 4)
    train_idx = torch.tensor([i for i in range(n) if i % 4])
    cfg = TrainConfig(epochs=3, batch_size=16, patience=1000)
    committee = Committee.build("mlp", 2, dim=2, width=8, depth=1)
    batches, _ = spy_on_members(committee, data, monkeypatch)
    result = fit(committee, data, cfg, split=(train_idx, val_idx))
    trained = {i for member in batches for batch in member for i in batch}
    assert trained <= set(train_idx.tolist()) and not trained & set(val_idx.tolist())
    assert result.val_energy_rmse == evaluate(committee, data.select(val_idx))["energy_rmse"]
    bad = [(train_idx, torch.tensor([n])), (train_idx, train_idx[:1]),
           (torch.tensor([], dtype=torch.long), val_idx), (train_idx, torch.tensor([-1]))]
    for split in bad:
        with pytest.raises(ValueError, match="split"):
            fit(committee, data, cfg, split=split)


def test_members_trained_separately_match_fit():
    from advsample.executors import make_executor

    data = toy_data(120, seed=4)
    split = (torch.arange(10, data.n_structures), torch.arange(10))
    cfg = TrainConfig(epochs=20, batch_size=16, patience=1000, seed=5)
    together = Committee.build("mlp", 2, dim=2, width=16, depth=2, seed=9)
    apart = Committee.build("mlp", 2, dim=2, width=16, depth=2, seed=9)
    a = fit(together, data, cfg, split=split)
    with make_executor("inprocess") as ex:
        b = fit_members_separately(apart, data, cfg, ex, split=split)
    for p, q in zip(together.parameters(), apart.parameters()):
        torch.testing.assert_close(p, q)
    assert a.as_dict() == b.as_dict()


def test_member_groups_on_two_workers_match_fit():
    """5 members on 2 workers: groups [0, 1, 2] and [3, 4] trained as committees of their
    own give fit's weights, epochs (members stop at different epochs) and history."""
    from advsample.executors import InProcessExecutor

    class TwoWorkersHere(InProcessExecutor):
        workers = 2

    jobs = []

    class Spy(TwoWorkersHere):
        def map(self, fn, batch):
            jobs.extend(batch)
            return super().map(fn, batch)

    data = toy_data(160, seed=4)
    split = (torch.arange(12, data.n_structures), torch.arange(12))
    cfg = TrainConfig(epochs=80, batch_size=16, patience=2, seed=5, min_epochs=0)
    together = Committee.build("mlp", 5, dim=2, width=16, depth=2, seed=9)
    grouped = Committee.build("mlp", 5, dim=2, width=16, depth=2, seed=9)
    a = fit(together, data, cfg, split=split)
    b = fit_members_separately(grouped, data, cfg, Spy(), split=split)
    assert [len(job[2]) for job in jobs] == [3, 2] and [job[5] for job in jobs] == [0, 3]
    for p, q in zip(together.parameters(), grouped.parameters()):
        torch.testing.assert_close(p, q)
    assert len(set(a.member_epochs)) > 1 and a.member_epochs == b.member_epochs
    np.testing.assert_allclose(a.history, b.history, rtol=1e-6)
    assert a.val_forces_rmse == pytest.approx(b.val_forces_rmse, rel=1e-6)


def test_members_trained_separately_on_dask_match_sequential_training():
    from advsample.executors import make_executor

    data = toy_data(300, seed=4)
    cfg = TrainConfig(epochs=60, patience=1000, seed=5)
    serial = Committee.build("mlp", 2, dim=2, width=16, depth=2, seed=9)
    parallel = Committee.build("mlp", 2, dim=2, width=16, depth=2, seed=9)
    with make_executor("inprocess") as ex:
        a = fit_members_separately(serial, data, cfg, ex)
    with make_executor("dask", workers=2) as ex:
        b = fit_members_separately(parallel, data, cfg, ex)
    for p, q in zip(serial.parameters(), parallel.parameters()):
        torch.testing.assert_close(p, q)
    assert a.val_energy_rmse == b.val_energy_rmse
    assert a.epochs == b.epochs == 60 and a.member_epochs == b.member_epochs == [60, 60]


def test_warm_start_keeps_the_starting_weights_when_no_epoch_beats_them():
    data = toy_data(300, seed=6)
    committee = Committee.build("mlp", 2, dim=2, width=16, depth=2, seed=1)
    fit(committee, data, TrainConfig(epochs=200, patience=1000, seed=7))
    start = [p.detach().clone() for p in committee.parameters()]
    before = evaluate(committee, data)
    # a learning rate this large wrecks every epoch: the starting weights must come back
    fit(committee, data, TrainConfig(epochs=3, lr=5.0, patience=1000, seed=7), warm_start=True)
    for p, q in zip(committee.parameters(), start):
        torch.testing.assert_close(p, q)
    assert evaluate(committee, data) == before


def test_vectorized_training_equals_training_member_by_member():
    data = toy_data(120, seed=8)
    cfg = TrainConfig(epochs=15, batch_size=16, patience=1000, seed=3)
    together = Committee.build("mlp", 3, dim=2, width=16, depth=2, seed=4)
    one_by_one = Committee.build("mlp", 3, dim=2, width=16, depth=2, seed=4)
    one_by_one.vectorize = False
    a, b = fit(together, data, cfg), fit(one_by_one, data, cfg)
    for p, q in zip(together.parameters(), one_by_one.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-9)
    assert a.member_epochs == b.member_epochs
    assert a.val_forces_rmse == pytest.approx(b.val_forces_rmse, rel=1e-9)


def test_training_is_reproducible_with_a_fixed_seed():
    data = toy_data(120, seed=9)
    cfg = TrainConfig(epochs=10, batch_size=16, patience=1000, seed=11)
    runs = []
    for _ in range(2):
        committee = Committee.build("mlp", 3, dim=2, width=16, depth=2, seed=2)
        result = fit(committee, data, cfg)
        runs.append(([p.detach().clone() for p in committee.parameters()], result.as_dict()))
    for p, q in zip(runs[0][0], runs[1][0], strict=True):
        assert torch.equal(p, q)
    assert runs[0][1] == runs[1][1]


def test_min_epochs_keeps_members_from_stopping_nearly_untrained(monkeypatch):
    """A validation loss that only rises (as when one new validation structure unlike any
    training one dominates it) is lowest after the first epoch. Without min_epochs every
    member stops after `patience` epochs and keeps its first-epoch weights; with it, each
    trains min_epochs + patience epochs and keeps the weights of epoch min_epochs."""
    import advsample.train as train_module

    data = toy_data(300, seed=5)
    for min_epochs, want in ((0, 1), (12, 12)):
        committee = Committee.build("mlp", 2, seed=1, dim=2, width=16, depth=2)
        states, calls = [], []

        def rising(committee, monitor, cfg, states=states, calls=calls):
            calls.append(1)
            states.append([copy.deepcopy(m.state_dict()) for m in committee.members])
            return torch.full((committee.size,), float(len(calls)))

        monkeypatch.setattr(train_module, "validation_losses", rising)
        cfg = TrainConfig(epochs=100, patience=4, seed=1, min_epochs=min_epochs)
        result = fit(committee, data, cfg)
        assert result.member_epochs == [want + cfg.patience] * 2
        for m, member in enumerate(committee.members):
            for name, value in member.state_dict().items():
                assert torch.equal(value, states[want - 1][m][name])  # epoch `want`'s weights
