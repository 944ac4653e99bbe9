"""Text-based editing in the edit-friendly DDPM noise space (Huberman-Spiegelglas et al., CVPR 2024).

Algorithm (paper defaults from the released code: 100 steps, skip 36, CFG 3.5 → 15, η = 1):
1. invert the image with the source prompt and source CFG → x_t path and noise maps z_t;
2. start from x at step ``skip`` (timestep T - skip·Δ) and run the remaining DDPM steps with the
   target prompt and target CFG, injecting the stored z_t instead of fresh noise.
Noise-map manipulations: translating x_T and every z_t translates the image; adding a colour
offset to the maps inside a region tints that region.
Diversity (the paper's §5): the noise maps of one image are not unique — each draw of the
independent x_t gives other maps that reconstruct the same x0 but edit differently, so N
inversions with N seeds give N different edits (:func:`redraw`, :func:`edit_samples`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image

from regionedit import __version__, defaults
from regionedit.core.inversion import DDPMInversion, invert, sample_from_noise_maps
from regionedit.errors import RegionEditError
from regionedit.images import from_model_range, tensor_to_pil
from regionedit.models.backend import DiffusionModel

DEFAULT_SKIP = defaults.DDPM_SKIP
DEFAULT_TARGET_GUIDANCE = defaults.DDPM_TARGET_GUIDANCE


@dataclass
class DDPMEditOutput:
    image: Image.Image
    sample: torch.Tensor  # the edited x0 (latents for latent models)
    recipe: dict
    pixels: torch.Tensor | None = None  # 1×3×H×W in [0, 1]: the image before 8-bit rounding


def edit(
    model: DiffusionModel,
    inversion: DDPMInversion,
    prompt: str | None = None,
    guidance_scale: float = DEFAULT_TARGET_GUIDANCE,
    skip: int = DEFAULT_SKIP,
    progress: bool = True,
) -> DDPMEditOutput:
    """Regenerate the image from step ``skip`` with the target ``prompt``, keeping the noise maps."""
    if inversion.xts.shape[1] != model.channels:
        raise RegionEditError(
            f"the inversion has {inversion.xts.shape[1]} channels but model {model.name} diffuses {model.channels}: "
            f"invert with the same model (the inversion was made with {inversion.model})"
        )
    denoiser = model.denoiser(prompt, guidance_scale)
    sample = sample_from_noise_maps(denoiser, inversion.to(model.device), start=skip, progress=progress)
    recipe = {
        "method": "ddpm_edit", "version": __version__, "model": model.name,
        "source_prompt": inversion.prompt, "source_guidance_scale": inversion.guidance_scale,
        "target_prompt": prompt, "target_guidance_scale": guidance_scale, "skip": skip,
        "num_inference_steps": inversion.num_inference_steps, "eta": inversion.eta, "seed": inversion.seed,
    }
    pixels = decoded(model, sample, inversion)
    return DDPMEditOutput(image=tensor_to_pil(pixels[0]), sample=sample, recipe=recipe, pixels=from_model_range(pixels))


def reconstruct(model: DiffusionModel, inversion: DDPMInversion, progress: bool = True) -> DDPMEditOutput:
    """Run the full reverse process with the source prompt and CFG: gives back the input."""
    output = edit(model, inversion, inversion.prompt, inversion.guidance_scale, skip=0, progress=progress)
    output.recipe["method"] = "ddpm_reconstruct"
    return output


def redraw(model: DiffusionModel, inversion: DDPMInversion, seed: int) -> DDPMInversion:
    """Invert the same x0 again with another draw of the noisy path (``seed``): other noise maps,
    the same reconstruction, a different edit."""
    if not inversion.is_exact:
        raise RegionEditError("only edit-friendly inversions (η > 0) can be redrawn; a DDIM inversion has no draw")
    fresh = invert(model, latents=inversion.x0, prompt=inversion.prompt, guidance_scale=inversion.guidance_scale,
                   num_inference_steps=inversion.num_inference_steps, eta=inversion.eta, seed=seed, progress=False,
                   record_attention=inversion.source_attention is not None)
    return replace(fresh, fit=inversion.fit)


def redraws(model: DiffusionModel, inversion: DDPMInversion, num_samples: int) -> list[DDPMInversion]:
    """``inversion`` and ``num_samples - 1`` redraws of it, with seeds seed+1, seed+2, …"""
    if num_samples < 1:
        raise RegionEditError(f"num_samples must be ≥ 1, got {num_samples}")
    base = inversion.seed if inversion.seed is not None else 0
    return [inversion] + [redraw(model, inversion, base + k) for k in range(1, num_samples)]


def edit_samples(
    model: DiffusionModel,
    inversion: DDPMInversion,
    prompt: str | None = None,
    guidance_scale: float = DEFAULT_TARGET_GUIDANCE,
    skip: int = DEFAULT_SKIP,
    num_samples: int = 1,
    progress: bool = True,
) -> list[DDPMEditOutput]:
    """``num_samples`` edits from independent noise-map draws (the first from ``inversion`` itself)."""
    return [edit(model, draw, prompt, guidance_scale, skip, progress) for draw in redraws(model, inversion, num_samples)]


def decoded(model: DiffusionModel, sample: torch.Tensor, inversion: DDPMInversion) -> torch.Tensor:
    """The sample as pixels in [-1, 1], cropped to the inverted image's working size."""
    pixels = model.decode(sample)
    if inversion.fit is not None:
        pixels = inversion.fit.crop(pixels)
    return pixels


def to_image(model: DiffusionModel, sample: torch.Tensor, inversion: DDPMInversion) -> Image.Image:
    return tensor_to_pil(decoded(model, sample, inversion)[0])


# ---------------------------------------------------------------------- noise-map manipulations
def _translate(x: torch.Tensor, dx: int, dy: int, fill: torch.Tensor) -> torch.Tensor:
    """Shift the last two dims by (dy, dx); vacated pixels are taken from ``fill``."""
    out = fill.clone()
    height, width = x.shape[-2:]
    src_y, dst_y = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


def shift(inversion: DDPMInversion, dx: int, dy: int, generator: torch.Generator | None = None) -> DDPMInversion:
    """Translate the image by (dx, dy) sample pixels (latent pixels for latent models).

    x0, every x_t and every noise map move together; the vacated strip of each x_t and map is
    filled with fresh Gaussian noise (zeros in a σ = 0 step's residual map), so the sampler invents
    new content there. Reconstruct (skip 0) from the result to see the shifted image.
    """
    height, width = inversion.x0.shape[-2:]
    if abs(dx) >= width or abs(dy) >= height:
        raise RegionEditError(f"shift ({dx}, {dy}) is larger than the sample ({width}×{height})")
    generator = generator or torch.Generator("cpu").manual_seed(0)

    def fresh(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)

    x0 = _translate(inversion.x0, dx, dy, inversion.x0)
    a = inversion.schedule.at(inversion.schedule.alpha_bar, torch.arange(len(inversion.schedule)), inversion.xts)
    xts = _translate(inversion.xts, dx, dy, a.sqrt() * x0 + (1 - a).sqrt() * fresh(inversion.xts))
    # A step with σ = 0 stores the raw residual, not a noise draw: its vacated strip gets none.
    drawn = (inversion.schedule.sigma(inversion.eta) > 0).view(-1, 1, 1, 1).to(inversion.zs)
    zs = _translate(inversion.zs, dx, dy, fresh(inversion.zs) * drawn)
    return replace(inversion, x0=x0, xts=xts, zs=zs, source_attention=None)  # the maps were of the old x_t


def tint(
    inversion: DDPMInversion,
    offset: Sequence[float],
    mask: torch.Tensor | None = None,
    start: int = 0,
) -> DDPMInversion:
    """Add a per-channel ``offset`` to x_start and every noise map (inside ``mask``, 1 = edit).

    For pixel models the channels are RGB, so a positive red offset reddens the region; for
    latent models they are the VAE's latent channels.
    """
    channels = inversion.zs.shape[1]
    if len(offset) != channels:
        raise RegionEditError(f"tint offset needs {channels} values (one per channel), got {len(offset)}")
    delta = torch.tensor(offset, dtype=inversion.zs.dtype, device=inversion.zs.device).view(1, -1, 1, 1)
    if mask is not None:
        if mask.shape[-2:] != inversion.zs.shape[-2:]:
            mask = torch.nn.functional.interpolate(mask.float(), size=inversion.zs.shape[-2:], mode="bilinear")
        delta = delta * mask.to(delta.device, delta.dtype)
    zs = inversion.zs.clone()
    zs[start:] += delta
    xts = inversion.xts.clone()
    xts[start] += delta[0]
    return replace(inversion, zs=zs, xts=xts, source_attention=None)  # the maps were of the old x_t
