"""The adversarial sampler: gradient ascent of log L from every seed (attack.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from advsample.attack import AttackConfig, BoltzmannPrior, Candidates, attack
from advsample.committee import Committee
from advsample.structures import Batch


@dataclass
class AdversarialSampler:
    """The attack as a sampler: :func:`advsample.attack.attack` with ``config`` from every seed."""

    config: AttackConfig = field(default_factory=AttackConfig)
    name: str = "attack"

    def propose(self, committee: Committee, seeds: Batch, prior: BoltzmannPrior) -> Candidates:
        """Attack every seed (× ``config.restarts``): one candidate per seed and restart, ``parent``
        the seed index, ``step`` the attack step kept.
        """
        return attack(committee, seeds, prior, self.config)
