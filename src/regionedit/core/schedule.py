"""The discrete noise schedule of a sampling run and the DDIM/DDPM step arithmetic on it.

Notation: step i = 0..N-1 goes from timestep t_i to the next lower one (x0 after the last);
ᾱ_i = ᾱ(t_i), ᾱ_prev,i = ᾱ(t_{i+1}) or the scheduler's final ᾱ. With η = 1 the DDIM step is
the DDPM posterior: σ_i² = (1-ᾱ_prev)/(1-ᾱ) · (1 - ᾱ/ᾱ_prev).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from regionedit import checks


@dataclass(frozen=True)
class Schedule:
    timesteps: torch.Tensor  # (N,) int64, descending
    alpha_bar: torch.Tensor  # (N,) float64, ᾱ at t_i
    alpha_bar_prev: torch.Tensor  # (N,) float64, ᾱ at the step's target

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int) -> Schedule:
        """Timesteps as diffusers' DDIM picks them (spacing, offset) for any scheduler's β schedule."""
        num_inference_steps = checks.integer("num_inference_steps", num_inference_steps, 1,
                                             int(scheduler.config.num_train_timesteps))
        ddim = DDIMScheduler.from_config(scheduler.config)
        ddim.set_timesteps(num_inference_steps)
        timesteps = ddim.timesteps.long().cpu()
        alphas = scheduler.alphas_cumprod.to(torch.float64).cpu()
        alpha_bar = alphas[timesteps]
        final = torch.tensor([float(ddim.final_alpha_cumprod)], dtype=torch.float64)
        return cls(timesteps, alpha_bar, torch.cat([alpha_bar[1:], final]))

    def __len__(self) -> int:
        return len(self.timesteps)

    def sigma(self, eta: float = 1.0) -> torch.Tensor:
        """(N,) standard deviation σ_i(η) of the noise added at each step."""
        a, a_prev = self.alpha_bar, self.alpha_bar_prev
        variance = ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0)
        return eta * variance.sqrt()

    def at(self, values: torch.Tensor, i: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[i] shaped to broadcast against ``like`` (one value per batch row for index tensors)."""
        picked = values[torch.as_tensor(i)].to(like.device, like.dtype)
        return picked.view(-1, *([1] * (like.dim() - 1))) if picked.dim() else picked

    def predict_x0(self, i: int | torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a = self.at(self.alpha_bar, i, x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def noise_to(self, i: int | torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """q(x_t | x0): √ᾱ x0 + √(1-ᾱ) ε at the timestep of step i."""
        a = self.at(self.alpha_bar, i, noise)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def mean(
        self, i: int | torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor, eta: float = 1.0,
        eps_direction: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """μ_i = √ᾱ_prev x̂0 + √(1-ᾱ_prev-σ²) ε̂, the DDIM mean of x_{t-1} given x_t.

        ``eps_direction`` replaces ε̂ in the direction term only (Asyrp's asymmetric step).
        """
        a_prev = self.at(self.alpha_bar_prev, i, x_t)
        sigma = self.at(self.sigma(eta), i, x_t)
        direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        eps_direction = eps if eps_direction is None else eps_direction
        return a_prev.sqrt() * self.predict_x0(i, x_t, eps) + direction * eps_direction

    def index_of(self, timestep: int) -> int:
        """The step whose timestep is closest to ``timestep``."""
        return int((self.timesteps - int(timestep)).abs().argmin())

    def invert_step(self, i: int, x_prev: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM inversion: x at t_i from x one level lower (ε̂ evaluated there)."""
        a, a_prev = self.at(self.alpha_bar, i, x_prev), self.at(self.alpha_bar_prev, i, x_prev)
        x0 = (x_prev - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        return a.sqrt() * x0 + (1 - a).sqrt() * eps
