"""The adversarial sampler: gradient ascent of log L from every seed (attack.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from advsample.attack import AttackConfig, BoltzmannPrior, Candidates, attack
from advsample.committee import Committee
from advsample.structures import Batch


@dataclass
class AdversarialSampler:
    config: AttackConfig = field(default_factory=AttackConfig)
    name: str = "attack"

    def propose(self, committee: Committee, seeds: Batch, prior: BoltzmannPrior) -> Candidates:
        return attack(committee, seeds, prior, self.config)
