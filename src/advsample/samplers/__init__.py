"""Samplers propose candidate structures from seeds; all share ``propose``.

``propose(committee, seeds, prior) -> Candidates``: the attack optimises, the random baseline
displaces at random, the uniform sampler ignores the seeds and fills the box.
"""

from advsample.samplers.adversarial import AdversarialSampler
from advsample.samplers.random import GaussianDisplacementSampler, UniformBoxSampler

SAMPLERS = {
    "attack": AdversarialSampler,
    "random": GaussianDisplacementSampler,
    "uniform": UniformBoxSampler,
}

__all__ = ["AdversarialSampler", "GaussianDisplacementSampler", "UniformBoxSampler", "SAMPLERS"]
