"""Samplers propose candidate structures from seeds; all share ``propose``.

``propose(committee, seeds, prior) -> Candidates``: the attack optimises, the random baseline
displaces at random, the uniform sampler ignores the seeds and fills the box, the MD sampler
runs NN-MD from them.
"""

from advsample.samplers.adversarial import AdversarialSampler
from advsample.samplers.md import MDSampler
from advsample.samplers.random import GaussianDisplacementSampler, UniformBoxSampler

SAMPLERS = {
    "attack": AdversarialSampler,
    "random": GaussianDisplacementSampler,
    "uniform": UniformBoxSampler,
    "md": MDSampler,
}

__all__ = ["AdversarialSampler", "GaussianDisplacementSampler", "MDSampler", "SAMPLERS",
           "UniformBoxSampler"]
