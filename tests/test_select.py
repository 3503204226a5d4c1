import ase
import numpy as np
import pytest
import torch

from advsample.attack import Candidates
from advsample.committee import Committee
from advsample.select import (
    SelectConfig,
    choose_seeds,
    distances_to,
    farthest_points,
    kabsch_rmsd,
    select,
    training_uncertainty,
)
from advsample.structures import Batch


def _candidates(points, objective, uncertainty):
    n = len(points)
    return Candidates(
        batch=Batch.from_points(points),
        objective=torch.as_tensor(objective, dtype=torch.float64),
        uncertainty=torch.as_tensor(uncertainty, dtype=torch.float64),
        energy=torch.zeros(n, dtype=torch.float64),
        parent=torch.zeros(n, dtype=torch.long),
        step=torch.zeros(n, dtype=torch.long),
        displacement=torch.zeros(n, dtype=torch.float64),
        feasible=torch.ones(n, dtype=torch.bool),
    )


def test_gate_dedup_and_cap():
    training = Batch.from_points([[0.0, 0.0], [1.0, 1.0]])
    points = [[0.0, 0.001],  # duplicate of training point
              [0.5, 0.5], [0.5, 0.5005],  # near-duplicates of each other
              [0.9, 0.1],  # below the gate
              [-0.5, 0.2], [0.3, -0.7]]
    cands = _candidates(points, [9, 8, 7.9, 10, 5, 4], [1, 1, 1, 0.01, 1, 1])
    cfg = SelectConfig(max_new=2, min_separation=0.01)
    chosen = select(cands, training, threshold=0.1, cfg=cfg)
    assert chosen.tolist() == [1, 4]  # ranked by objective, dup/gated skipped, capped at 2
    cfg.max_new = 10
    assert select(cands, training, 0.1, cfg).tolist() == [1, 4, 5]


def test_infeasible_candidates_are_never_chosen():
    cands = _candidates([[0.2, 0.2], [0.4, 0.4]], [1, 2], [1, 1])
    cands.feasible[1] = False
    chosen = select(cands, Batch.from_points([[5.0, 5.0]]), 0.0, SelectConfig())
    assert chosen.tolist() == [0]


def test_kabsch_rmsd_ignores_rotation_and_translation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 5, 3, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    b = a @ q.T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert kabsch_rmsd(a, b).item() < 1e-7
    c = a.clone()
    c[0, 0, 0] += 0.5
    assert kabsch_rmsd(a, c).item() > 0.05


def _nh3(positions) -> Batch:
    return Batch.from_atoms([ase.Atoms("NH3", positions=positions)], labels=False)


def test_distances_metric_is_blind_to_swapped_hydrogens_and_mirror_images():
    nh3 = np.array([[0.0, 0.0, 0.1], [0.95, 0.0, -0.3], [-0.4, 0.85, -0.3],
                    [-0.45, -0.8, -0.35]])
    reference = _nh3(nh3)
    swapped = _nh3(nh3[[0, 2, 1, 3]])
    mirrored = _nh3(nh3 * np.array([1.0, 1.0, -1.0]))
    for copy in (swapped, mirrored):
        assert distances_to(reference, copy, "distances").item() < 1e-6
        single = distances_to(reference.to(dtype=torch.float32),
                              copy.to(dtype=torch.float32), "distances")
        assert single.item() < 1e-5  # the sort does not depend on float precision
        assert distances_to(reference, copy, "rmsd").item() > 0.1  # RMSD counts them new
    # one N-H stretched by 0.3 Å: the RMS over the 6 sorted distances, computed by hand
    stretched = nh3.copy()
    stretched[1] += 0.3 * stretched[1] / np.linalg.norm(stretched[1])

    def pair_distances(x):
        nh = sorted(np.linalg.norm(x[k] - x[0]) for k in (1, 2, 3))
        hh = sorted(np.linalg.norm(x[a] - x[b]) for a, b in ((1, 2), (1, 3), (2, 3)))
        return np.array(nh + hh)

    expected = np.sqrt(np.mean((pair_distances(stretched) - pair_distances(nh3)) ** 2))
    got = distances_to(reference, _nh3(stretched), "distances").item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_distances_metric_refuses_periodic_structures():
    cell = ase.Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]], cell=[3.6] * 3, pbc=True)
    batch = Batch.from_atoms([cell], labels=False)
    with pytest.raises(ValueError, match="periodic"):
        distances_to(batch, batch, "distances")


def test_rank_by_objective_uncertainty_or_at_random():
    points = [[0.1 * k, -0.1 * k] for k in range(1, 9)]
    objective = [8, 7, 6, 5, 4, 3, 2, 1]
    uncertainty = [1, 2, 3, 4, 5, 6, 7, 8]
    cands = _candidates(points, objective, uncertainty)
    far = Batch.from_points([[5.0, 5.0]])
    by = {rank: select(cands, far, 0.0, SelectConfig(max_new=3, rank=rank, seed=1)).tolist()
          for rank in ("objective", "uncertainty", "random")}
    assert by["objective"] == [0, 1, 2] and by["uncertainty"] == [7, 6, 5]
    assert by["random"] == select(cands, far, 0.0, SelectConfig(max_new=3, rank="random",
                                                                 seed=1)).tolist()
    draws = {tuple(select(cands, far, 0.0, SelectConfig(max_new=3, rank="random",
                                                        seed=s)).tolist()) for s in range(6)}
    assert len(draws) > 1  # the seed changes the pick
    assert by["random"] != by["objective"] or len(draws) > 1


def _clusters():
    """Three tight clusters of 2D points; the first cluster has the best objectives."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0]] * 5 + [[5.0, 0.0]] * 5 + [[0.0, 5.0]] * 5,
                           dtype=torch.float64)
    points = centres + 0.1 * torch.randn(15, 2, generator=g, dtype=torch.float64)
    objective = torch.tensor([10.0] * 5 + [5.0] * 5 + [1.0] * 5) + torch.arange(15) * 0.01
    return points, objective


def test_farthest_point_selection_spreads_over_the_clusters():
    points, objective = _clusters()
    cands = _candidates(points.tolist(), objective, [1.0] * 15)
    training = Batch.from_points([[-20.0, -20.0]])
    ranked = select(cands, training, 0.0, SelectConfig(max_new=3, min_separation=0.01))
    assert set(ranked.tolist()) <= set(range(5))  # rank order: all from the best cluster
    spread = select(cands, training, 0.0, SelectConfig(max_new=3, min_separation=0.01,
                                                       diversity="fps"))
    assert spread[0] == 4  # the best ranked first
    assert sorted(int(k) // 5 for k in spread) == [0, 1, 2]  # one per cluster
    # candidates within min_separation of training are skipped, and the budget is still filled
    near = Batch.from_points([points[4].tolist()])
    again = select(cands, near, 0.0, SelectConfig(max_new=3, min_separation=0.01,
                                                  diversity="fps"))
    assert 4 not in again.tolist() and len(again) == 3


def test_farthest_points_stop_when_everything_left_is_a_duplicate():
    batch = Batch.from_points([[0.0, 0.0], [0.0, 0.001], [3.0, 0.0]])
    assert farthest_points(batch, 0, 5, "coordinates", min_separation=0.01) == [0, 2]


def test_seed_choice_by_uncertainty_and_spread():
    points, _ = _clusters()
    training = Batch.from_points(points.tolist())
    training.energy = torch.zeros(15, dtype=torch.float64)
    committee = Committee.build("mlp", 3, dim=2, width=8, depth=2).eval()
    variance = training_uncertainty(committee, training)
    top = choose_seeds(committee, training, 4, "uncertainty", metric="coordinates")
    assert set(top.tolist()) == set(torch.argsort(variance, descending=True)[:4].tolist())
    spread = choose_seeds(committee, training, 3, "spread", metric="coordinates")
    assert sorted(int(k) // 5 for k in spread) == [0, 1, 2]
    chance = choose_seeds(committee, training, 5, "random", seed=1)
    assert len(set(chance.tolist())) == 5 and chance.tolist() == sorted(chance.tolist())
    assert len(choose_seeds(committee, training, None)) == 15
