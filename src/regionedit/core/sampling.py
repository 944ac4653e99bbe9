"""Samplers as small functions of a denoiser, a schedule and a noise source (k-diffusion style).

A *denoiser* maps (x_t, t) → ε̂. A *noise source* gives, for step i, the term added to the DDIM
mean: fresh Gaussian noise σ_i ε for ordinary sampling, or stored noise maps σ_i z_i for the
edit-friendly DDPM space.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from regionedit.core.schedule import Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseSource = Callable[[int, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], torch.Tensor | None]


def gaussian_noise(schedule: Schedule, eta: float = 1.0, generator: torch.Generator | None = None) -> NoiseSource:
    """Fresh noise σ_i(η) ε, drawn on the generator's device (CPU generators reproduce across devices)."""
    sigma = schedule.sigma(eta)

    def noise(i: int, x: torch.Tensor) -> torch.Tensor:
        if sigma[i] == 0:
            return torch.zeros_like(x)
        device = generator.device if generator is not None else x.device
        eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        return float(sigma[i]) * eps

    return noise


def stored_noise(maps: torch.Tensor, scale: torch.Tensor, offset: int = 0) -> NoiseSource:
    """Noise maps z_i scaled by ``scale[i]``; ``offset`` maps step i to ``maps[i - offset]``."""

    def noise(i: int, x: torch.Tensor) -> torch.Tensor:
        return float(scale[i]) * maps[i - offset].to(x.device, x.dtype).expand_as(x)

    return noise


def sample(
    denoiser: Denoiser,
    schedule: Schedule,
    x: torch.Tensor,
    noise: NoiseSource,
    eta: float = 1.0,
    start: int = 0,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run steps ``start..N-1`` of the DDIM(η) sampler from x at timestep t_start.

    ``callback(i, x)`` runs after each step and may return a replacement x (used for blending).
    """
    for i in tqdm(range(start, len(schedule)), disable=not progress, desc="sampling", leave=False):
        with torch.no_grad():
            eps = denoiser(x, schedule.timesteps[i])
        x = schedule.mean(i, x, eps, eta) + noise(i, x)
        if callback is not None and (replaced := callback(i, x)) is not None:
            x = replaced
    return x
