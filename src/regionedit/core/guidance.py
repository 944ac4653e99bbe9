"""Guidance from pixel-space losses on the predicted clean image x̂0 (classifier-guidance style).

At step t, x̂0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ with ε̂ held fixed (no backward pass through the UNet, as in
CLIP-guided diffusion codes); a loss L(decode(x̂0)) gives ε̂' = ε̂ + √(1−ᾱ) ∇_{x_t} L.

RDM's terms: a CLIP loss inside the edit region (1 − cosine similarity of random cutouts of the
region with the target text, its gradient zeroed outside the region) and the non-editing-region-
preserving loss outside it (MSE, plus LPIPS when its weights are installed).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from regionedit import metrics
from regionedit.core.schedule import Schedule
from regionedit.models.backend import DiffusionModel


def make_cutouts(images: torch.Tensor, count: int, size: int, generator: torch.Generator,
                 min_fraction: float = 0.5) -> torch.Tensor:
    """``count`` random square crops per image (side between min_fraction and 1 of the shorter side),
    resized to size×size; differentiable with respect to the images."""
    height, width = images.shape[-2:]
    side = min(height, width)
    crops = []
    for _ in range(count):
        s = int(side * (min_fraction + (1 - min_fraction) * torch.rand(1, generator=generator).item()))
        s = max(1, s)
        y = int(torch.randint(0, height - s + 1, (1,), generator=generator))
        x = int(torch.randint(0, width - s + 1, (1,), generator=generator))
        crops.append(F.interpolate(images[..., y : y + s, x : x + s], size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=s > size))
    return torch.cat(crops)


def bounding_box(mask: torch.Tensor, margin: int = 0) -> tuple[slice, slice]:
    """Rows and columns of the mask's bounding box (1×1×H×W), grown by ``margin``."""
    rows = mask[0, 0].any(dim=1).nonzero().view(-1)
    cols = mask[0, 0].any(dim=0).nonzero().view(-1)
    height, width = mask.shape[-2:]
    return (slice(max(0, int(rows[0]) - margin), min(height, int(rows[-1]) + 1 + margin)),
            slice(max(0, int(cols[0]) - margin), min(width, int(cols[-1]) + 1 + margin)))


@dataclass
class GuidanceGradients:
    clip: torch.Tensor | None  # ∇ of the CLIP term (zero outside the region)
    nerp: torch.Tensor | None  # ∇ of the background-preserving term


class RegionGuidance:
    """CLIP inside the region, NERP outside, as a correction of ε̂."""

    def __init__(self, model: DiffusionModel, schedule: Schedule, region_pixels: torch.Tensor, region_sample: torch.Tensor,
                 original_pixels: torch.Tensor, clip=None, target_text: str | None = None, clip_scale: float = 150.0,
                 cutouts: int = 16, mse_weight: float = 10000.0, lpips_weight: float = 1000.0, seed: int = 0):
        self.model, self.schedule = model, schedule
        self.region_pixels = region_pixels.to(model.device)  # 1×1×H×W at the padded pixel size
        self.region_sample = region_sample.to(model.device)  # 1×1×h×w at the sample's size
        self.original = original_pixels.to(model.device)  # 1×3×H×W in [-1, 1]
        self.clip, self.clip_scale, self.cutouts = clip, clip_scale, cutouts
        self.mse_weight = mse_weight
        self.generator = torch.Generator().manual_seed(seed)
        self.text = clip.text_embeddings([target_text]) if clip is not None and clip_scale > 0 else None
        self.box = bounding_box(self.region_pixels, margin=2)
        self.lpips_weight = lpips_weight if lpips_weight > 0 and self._lpips_ready() else 0.0

    @staticmethod
    def _lpips_ready() -> bool:
        available, why = metrics.lpips_available()
        if not available:
            warnings.warn(f"NERP without LPIPS: {why}", stacklevel=3)
        return available

    @property
    def active(self) -> bool:
        return self.text is not None or self.mse_weight > 0 or self.lpips_weight > 0

    def gradients(self, x_t: torch.Tensor, step: int, eps: torch.Tensor) -> GuidanceGradients:
        """∇_{x_t} of each loss term at x̂0(x_t) with ε̂ held fixed."""
        with torch.enable_grad():
            x = x_t.detach().float().requires_grad_(True)
            pixels = self.model.decode_differentiable(self.schedule.predict_x0(step, x, eps.detach().float()))
            clip_grad = nerp_grad = None
            if self.text is not None:
                (clip_grad,) = torch.autograd.grad(self.clip_scale * self._clip_loss(pixels), x, retain_graph=True)
                clip_grad = clip_grad * self.region_sample
            nerp = self._nerp_loss(pixels)
            if nerp is not None:
                (nerp_grad,) = torch.autograd.grad(nerp, x)
        return GuidanceGradients(clip_grad, nerp_grad)

    def _clip_loss(self, pixels: torch.Tensor) -> torch.Tensor:
        rows, cols = self.box
        region = ((pixels + 1) / 2)[..., rows, cols] * self.region_pixels[..., rows, cols]
        crops = make_cutouts(region, self.cutouts, self.clip.image_size, self.generator)
        similarity = (self.clip.image_features(crops) * self.text).sum(-1)
        return (1 - similarity).mean()

    def _nerp_loss(self, pixels: torch.Tensor) -> torch.Tensor | None:
        outside = 1 - self.region_pixels
        loss = None
        if self.mse_weight > 0:
            loss = self.mse_weight * ((pixels - self.original) ** 2 * outside).sum() / (outside.sum() * 3).clamp_min(1)
        if self.lpips_weight > 0:
            term = self.lpips_weight * metrics.lpips_distance((pixels * outside + 1) / 2, (self.original * outside + 1) / 2,
                                                             differentiable=True).mean()
            loss = term if loss is None else loss + term
        return loss

    def correct(self, x_t: torch.Tensor, step: int, eps: torch.Tensor) -> torch.Tensor:
        """ε̂ + √(1−ᾱ_t) ∇L."""
        grads = self.gradients(x_t, step, eps)
        total = sum(g for g in (grads.clip, grads.nerp) if g is not None)
        a = self.schedule.at(self.schedule.alpha_bar, step, x_t)
        return eps + (1 - a).sqrt() * total
