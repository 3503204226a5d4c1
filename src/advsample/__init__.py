"""advsample: uncertainty-based adversarial sampling for neural-network potentials."""

from advsample.structures import Batch, concatenate

__all__ = ["Batch", "concatenate"]
__version__ = "0.1.0"
