"""Per-item random numbers: item i of a world is a function of its seed alone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def uniforms(seeds: Sequence[int], count: int, stream: int = 0) -> torch.Tensor:
    """(len(seeds), count) float64 uniforms in [0, 1); row i depends only on (seeds[i], stream)."""
    rows = [np.random.Generator(np.random.Philox(key=[int(seed), stream])).random(count) for seed in seeds]
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, count, dtype=torch.float64)
