"""Samplers propose candidate structures from seeds; all share ``propose``.

``propose(committee, seeds, prior) -> Candidates``: the attack optimises, the random baseline
displaces at random, the uniform sampler ignores the seeds and fills the box, the MD sampler
runs NN-MD from them and the biased MD sampler runs it on a potential lowered where the
committee disagrees (UDD-AL).
"""

from advsample.samplers.adversarial import AdversarialSampler
from advsample.samplers.biased_md import BiasedMDSampler
from advsample.samplers.md import MDSampler
from advsample.samplers.random import GaussianDisplacementSampler, UniformBoxSampler

SAMPLERS = {
    "attack": AdversarialSampler,
    "random": GaussianDisplacementSampler,
    "uniform": UniformBoxSampler,
    "md": MDSampler,
    "biased_md": BiasedMDSampler,
}

__all__ = ["AdversarialSampler", "BiasedMDSampler", "GaussianDisplacementSampler", "MDSampler",
           "SAMPLERS", "UniformBoxSampler"]
