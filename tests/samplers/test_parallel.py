"""Seeds split over an executor's workers (ParallelSampler).

Checked: with one worker the wrapper is the sampler itself (bit for bit); with two, the
candidates are, in seed order, what the sampler gives on each chunk of seeds with the
chunk's seed (parents index the full seed batch) and the committee's evaluation count grows
by the workers' counts; worker processes give what the in-process map gives (committee and
seeds shipped by pickle); the attack raises the objective in every chunk; samplers whose
seeds interact are refused, by the wrapper and by the configuration.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from ase.build import molecule

from advsample.attack import AttackConfig, BoltzmannPrior, Candidates, score
from advsample.chunks import CHUNK_SEED_STRIDE
from advsample.committee import Committee
from advsample.config import ConfigError, parse_config
from advsample.executors import InProcessExecutor, make_executor
from advsample.samplers import SAMPLERS
from advsample.samplers.parallel import ParallelSampler, chunk_sampler
from advsample.structures import Batch, concatenate

FIELDS = ("objective", "uncertainty", "energy", "parent", "step", "displacement", "feasible")


class TwoWorkersHere(InProcessExecutor):
    """Two 'workers' that run their jobs in this process, one after the other."""

    workers = 2


def rattled_nh3(n: int, seed: int = 0):
    """n rattled NH3 (0.05 Å, made-up energies), a 3-member PaiNN committee and its prior."""
    g = torch.Generator().manual_seed(seed)
    seeds = Batch.from_atoms([molecule("NH3") for _ in range(n)], labels=False)
    seeds = seeds.with_positions(seeds.positions + 0.05 * torch.randn(
        seeds.positions.shape, generator=g, dtype=seeds.positions.dtype))
    energy = -80.0 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    prior = BoltzmannPrior.from_training(seeds.with_labels(energy, None), kT=0.05)
    committee = Committee.build("painn", 3, seed=2, features=8, interactions=1, cutoff=4.0,
                                n_rbf=8).eval()
    return committee, prior, seeds


def attack_sampler(steps: int = 15, restarts: int = 2, seed: int = 3):
    return SAMPLERS["attack"](config=AttackConfig(steps=steps, lr=0.02, restarts=restarts,
                                                  seed=seed, progress=False))


def assert_same(a: Candidates, b: Candidates, exact: bool = False) -> None:
    check = torch.testing.assert_close if not exact else (
        lambda x, y: torch.testing.assert_close(x, y, rtol=0, atol=0))
    check(a.batch.positions, b.batch.positions)
    for key in FIELDS:
        check(getattr(a, key), getattr(b, key))


def test_one_worker_is_the_sampler_itself():
    committee, prior, seeds = rattled_nh3(5)
    sampler = attack_sampler()
    serial = sampler.propose(committee, seeds, prior)
    wrapped = ParallelSampler(sampler, InProcessExecutor()).propose(committee, seeds, prior)
    assert_same(serial, wrapped, exact=True)


@pytest.mark.parametrize("name", ["attack", "random"])
def test_two_workers_give_each_chunk_its_own_run_in_seed_order(name):
    committee, prior, seeds = rattled_nh3(5)
    cfg = AttackConfig(steps=15, lr=0.02, restarts=2, seed=3, progress=False)
    sampler = SAMPLERS[name](config=cfg)
    before = committee.evaluated
    found = ParallelSampler(sampler, TwoWorkersHere()).propose(committee, seeds, prior)
    parallel_evaluations, before = committee.evaluated - before, committee.evaluated

    first = chunk_sampler(sampler, 0).propose(committee, seeds.select(torch.arange(3)), prior)
    second = chunk_sampler(sampler, 1).propose(committee, seeds.select(torch.arange(3, 5)),
                                               prior)
    assert chunk_sampler(sampler, 1).config.seed == cfg.seed + CHUNK_SEED_STRIDE
    expected = Candidates.concat([first, replace(second, parent=second.parent + 3)])
    assert_same(found, expected)
    assert sorted(found.parent.tolist()) == sorted(list(range(5)) * 2)
    # the workers' evaluations count on the caller's committee
    assert parallel_evaluations == committee.evaluated - before > 0
    # each chunk's attack raised the objective above its seed's
    start, _, _ = score(committee, concatenate([seeds, seeds]), prior)
    if name == "attack":
        seed_objective = start[found.parent]
        assert bool((found.objective[found.feasible] > seed_objective[found.feasible]).all())


def test_worker_processes_give_the_in_process_result():
    committee, prior, seeds = rattled_nh3(4)
    sampler = attack_sampler(steps=10)
    here = ParallelSampler(sampler, TwoWorkersHere()).propose(committee, seeds, prior)
    with make_executor("processes", workers=2) as executor:
        there = ParallelSampler(sampler, executor).propose(committee, seeds, prior)
    assert_same(here, there)


def test_samplers_whose_seeds_interact_are_refused():
    relative = SAMPLERS["md"](max_uncertainty=10.0, max_uncertainty_units="seeds")
    with pytest.raises(ValueError, match="cannot split"):
        ParallelSampler(relative, TwoWorkersHere())
    ParallelSampler(SAMPLERS["md"](max_uncertainty=0.5), TwoWorkersHere())  # absolute: fine
    with pytest.raises(ValueError, match="cannot split"):
        ParallelSampler(SAMPLERS["uniform"](), TwoWorkersHere())
    base = {"system": {"molecule": "NH3"}, "oracle": {"type": "xtb"}}
    with pytest.raises(ConfigError, match="sampler: parallel: sampler md cannot split"):
        parse_config({**base, "sampler": {"type": "md", "parallel": True}})
    parse_config({**base, "sampler": {"type": "md", "parallel": True,
                                      "md_max_uncertainty": None}})
    parse_config({**base, "sampler": {"type": "attack", "parallel": True}})
