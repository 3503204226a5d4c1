"""The attack's thermalisation: attacked structures get their thermal vibrations.

Members are elastic networks of NH3 (springs on every pair at its relaxed length), so the
committee mean is harmonic about the relaxed molecule with its 6 internal modes: Langevin
dynamics long enough must give a mean potential energy of 6 x ½ k_B T (equipartition),
whatever the structure started at. Checked too: the thermalised candidates' scores are
those of their new positions, parent and step are kept, and a structure the attack could
not place stays infeasible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from helpers import ElasticNetwork

from advsample.attack import AttackConfig, BoltzmannPrior, attack, score
from advsample.committee import Committee
from advsample.samplers.adversarial import AdversarialSampler, thermalized
from advsample.structures import Batch

NH3 = molecule("NH3")


def setup(copies: int):
    committee = Committee([ElasticNetwork(8.0), ElasticNetwork(12.0)])
    seeds = Batch.from_atoms([NH3] * copies, labels=False)
    relaxed = NH3.copy()
    relaxed.calc = SinglePointCalculator(relaxed, energy=0.0, forces=np.zeros((4, 3)))
    prior = BoltzmannPrior.from_training(Batch.from_atoms([relaxed]), kT=0.05)
    return committee, seeds, prior


def test_thermalised_structures_reach_equipartition():
    committee, seeds, prior = setup(256)
    cfg = AttackConfig(steps=5, lr=0.001, init_scale=0.001, seed=3)
    attacked = attack(committee, seeds, prior, cfg)
    temperature = 300.0
    out = thermalized(committee, attacked, prior, cfg, duration_fs=600.0,
                      temperature_K=temperature, timestep_fs=0.5, friction_per_fs=0.01)
    kT = units.kB * temperature
    # the attack's 5 small steps leave the bonds nearly relaxed: far below a thermal energy
    assert attacked.energy.mean() < 0.5 * kT
    # 6 internal modes x ½ kT; the mean of 256 structures has a standard error of ~0.11 kT
    mean = float(out.energy.mean()) / kT
    assert 2.6 < mean < 3.4, mean


def test_thermalised_candidates_are_scored_where_they_are():
    committee, seeds, prior = setup(8)
    cfg = AttackConfig(steps=5, lr=0.001, seed=3, restarts=2)
    attacked = attack(committee, seeds, prior, cfg)
    attacked.feasible[3] = False  # a structure the attack could not place
    out = thermalized(committee, attacked, prior, cfg, duration_fs=20.0, temperature_K=300.0)
    objective, variance, energy = score(committee, out.batch, prior)
    torch.testing.assert_close(out.objective, objective.detach())
    torch.testing.assert_close(out.uncertainty, variance.detach())
    torch.testing.assert_close(out.energy, energy.detach())
    assert torch.equal(out.parent, attacked.parent) and torch.equal(out.step, attacked.step)
    assert not out.feasible[3] and out.feasible[torch.arange(16) != 3].all()
    # 20 fs at 300 K: the molecule turns freely, but its shape changes only by vibrations
    pairs = ElasticNetwork(1.0)
    before, after = (pairs.distances(c.batch.positions.view(-1, 4, 3)) for c in (attacked, out))
    assert 0 < (after - before).abs().max() < 0.2
    assert (out.displacement >= attacked.displacement).all()


def test_sampler_thermalises_only_when_asked():
    committee, seeds, prior = setup(4)
    cfg = AttackConfig(steps=5, lr=0.001, seed=3)
    plain = AdversarialSampler(config=cfg).propose(committee, seeds, prior)
    torch.testing.assert_close(plain.batch.positions,
                               attack(committee, seeds, prior, cfg).batch.positions)
    warm = AdversarialSampler(config=cfg, thermalize_fs=20.0).propose(committee, seeds, prior)
    assert not torch.allclose(warm.batch.positions, plain.batch.positions)


def test_config_keys_reach_the_sampler():
    import yaml

    from advsample.config import parse_config
    from advsample.run import make_sampler

    example = Path(__file__).resolve().parents[2] / "examples" / "ammonia_xtb.yaml"
    data = yaml.safe_load(example.read_text())
    data["sampler"].update(thermalize_fs=40.0, thermalize_temperature_K=500.0,
                           md_timestep_fs=0.25)
    sampler = make_sampler(parse_config(data), generation=1, progress=False)
    assert (sampler.thermalize_fs, sampler.thermalize_temperature_K, sampler.timestep_fs) == (
        40.0, 500.0, 0.25)
    data["sampler"]["thermalize_fs"] = -1.0
    with pytest.raises(Exception, match="thermalize_fs"):
        parse_config(data, "x.yaml")
