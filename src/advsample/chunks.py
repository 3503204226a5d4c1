"""Work split into contiguous chunks, one per worker process, and each chunk's seed.

Seeds (training structures to attack) and NN-MD runs are independent of each other, so W
workers can each take a contiguous chunk and the results concatenate in the original order.
Only the random numbers differ from one batch's: chunk c draws from seed + c ·
CHUNK_SEED_STRIDE, so chunk 0 starts as the single batch does and one worker reproduces it
exactly; another number of workers draws other random numbers.
"""

from __future__ import annotations

import numpy as np

CHUNK_SEED_STRIDE = 7919  # seed offset between chunks (a prime: no chunk repeats another's)


def chunks(n: int, workers: int) -> list[np.ndarray]:
    """Indices 0..n-1 in min(workers, n) contiguous chunks of near-equal size (at least one
    chunk, empty when n = 0)."""
    return np.array_split(np.arange(n), max(1, min(workers, n)))


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` of work seeded ``seed``."""
    return seed + chunk * CHUNK_SEED_STRIDE
