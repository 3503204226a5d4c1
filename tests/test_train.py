import torch

from advsample.committee import Committee
from advsample.loop import initial_points
from advsample.oracles.analytic import DoubleWell2D
from advsample.train import TrainConfig, evaluate, fit, split_indices


def test_training_lowers_validation_error():
    data = initial_points(DoubleWell2D(), 600, 0.0, seed=1)
    committee = Committee.build("mlp", 3, dim=2, width=32, depth=2)
    cfg = TrainConfig(epochs=300, patience=1000, seed=2)
    train_idx, val_idx = split_indices(data.n_structures, cfg.val_fraction, cfg.seed)
    for m in committee.members:
        m.fit_statistics(data.select(train_idx))
    before = evaluate(committee, data.select(val_idx))
    result = fit(committee, data, cfg)
    assert result.val_energy_rmse < 0.2 * before["energy_rmse"]
    assert result.val_forces_rmse < 0.2 * before["forces_rmse"]
    # members keep distinct weights after training on the same data
    w0, w1 = (m.mlp[0].weight for m in committee.members[:2])
    assert not torch.allclose(w0, w1)


def test_split_is_reproducible_and_disjoint():
    a, b = split_indices(50, 0.2, seed=3)
    c, d = split_indices(50, 0.2, seed=3)
    assert torch.equal(a, c) and torch.equal(b, d)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(b) == 10


def test_members_trained_separately_on_dask_match_sequential_training():
    from advsample.executors import make_executor
    from advsample.train import fit_members_separately

    data = initial_points(DoubleWell2D(), 300, 0.0, seed=4)
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
    assert a.epochs == b.epochs == 60


def test_warm_start_keeps_the_starting_weights_when_no_epoch_beats_them():
    data = initial_points(DoubleWell2D(), 300, 0.0, seed=6)
    committee = Committee.build("mlp", 2, dim=2, width=16, depth=2, seed=1)
    fit(committee, data, TrainConfig(epochs=200, patience=1000, seed=7))
    start = [p.detach().clone() for p in committee.parameters()]
    before = evaluate(committee, data)
    # a learning rate this large wrecks every epoch: the starting weights must come back
    fit(committee, data, TrainConfig(epochs=3, lr=5.0, patience=1000, seed=7), warm_start=True)
    for p, q in zip(committee.parameters(), start):
        torch.testing.assert_close(p, q)
    assert evaluate(committee, data) == before
