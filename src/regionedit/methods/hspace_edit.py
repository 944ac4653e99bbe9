"""Shared machinery of the h-space methods (RBE, JICA): bring an image to timestep t, take masked
Jacobians there, and sample with a direction added to h at every remaining step.

Real images reach x_t by deterministic DDIM inversion (the RBE code: 40 steps, t = 500), or, as an
option, by the edit-friendly DDPM inversion, whose stored noise maps make the unedited
reconstruction exact. Directions may also live in x_t-space (Park et al., LOCO-Edit): there the
edit is x_t ← x_t + γu once, before sampling.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from regionedit import checks, defaults
from regionedit.core import hspace
from regionedit.core.inversion import DDPMInversion, invert
from regionedit.core.jacobian import MaskedJacobian
from regionedit.core.sampling import gaussian_noise, stored_noise
from regionedit.core.schedule import Schedule
from regionedit.errors import RegionEditError
from regionedit.images import from_model_range
from regionedit.masks import check_region, pad_to, resize
from regionedit.models.backend import DiffusionModel, ImageFit

SPACES = ("h", "x")
DEFAULT_TIMESTEP = defaults.HSPACE_TIMESTEP  # the RBE code: t = 500 after a 40-step DDIM inversion
DEFAULT_STEPS = defaults.HSPACE_STEPS
DEFAULT_JVP = defaults.HSPACE_JVP
DEFAULT_ETA = defaults.HSPACE_ETA


@dataclass
class EditStart:
    """An image at timestep t of a sampling schedule, ready for discovery and editing."""

    x_t: torch.Tensor  # 1×C×h×w
    step: int  # index of t in schedule.timesteps
    schedule: Schedule
    prompt: str | None = None
    guidance_scale: float = 1.0
    fit: ImageFit | None = None
    noise_maps: DDPMInversion | None = None  # set when reached by the edit-friendly inversion

    @property
    def timestep(self) -> int:
        return int(self.schedule.timesteps[self.step])


def start_from_image(
    model: DiffusionModel,
    image,
    timestep: int = DEFAULT_TIMESTEP,
    num_inference_steps: int = DEFAULT_STEPS,
    inversion: str = "ddim",
    prompt: str | None = None,
    guidance_scale: float = 1.0,
    seed: int = 0,
    max_side: int | None = None,
) -> EditStart:
    """Invert ``image`` to ``timestep`` ("ddim": deterministic; "ddpm": edit-friendly noise maps)."""
    if inversion not in ("ddim", "ddpm"):
        raise RegionEditError(f"inversion must be 'ddim' or 'ddpm', got {inversion!r}")
    check_timestep(model, timestep)
    seed = checks.seed(seed)
    schedule = Schedule.from_scheduler(model.scheduler, num_inference_steps)
    step = schedule.index_of(timestep)
    if inversion == "ddpm":
        maps = invert(model, image, prompt=prompt, guidance_scale=guidance_scale,
                      num_inference_steps=num_inference_steps, seed=seed, max_side=max_side, progress=False)
        return EditStart(maps.x_at(step), step, maps.schedule, prompt, guidance_scale, maps.fit, maps)
    pixels, fit = model.fit_image(image, max_side)
    x = model.encode(pixels)
    denoiser = model.denoiser(prompt, guidance_scale)
    with torch.no_grad():
        for i in range(len(schedule) - 1, step - 1, -1):
            x = schedule.invert_step(i, x, denoiser(x, schedule.timesteps[i]))
    return EditStart(x, step, schedule, prompt, guidance_scale, fit)


def start_from_noise(
    model: DiffusionModel, size: tuple[int, int], timestep: int = DEFAULT_TIMESTEP, num_inference_steps: int = DEFAULT_STEPS,
    seed: int = 0, eta: float = DEFAULT_ETA, prompt: str | None = None, guidance_scale: float = 1.0,
) -> EditStart:
    """A generated sample: x_T ~ N(0, I) sampled down to ``timestep`` (size: sample-space H, W)."""
    check_timestep(model, timestep)
    seed, eta = checks.seed(seed), checks.number("eta", eta, 0, 1)
    schedule = Schedule.from_scheduler(model.scheduler, num_inference_steps)
    step = schedule.index_of(timestep)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, model.channels, *size, generator=generator).to(model.device)
    denoiser, noise = model.denoiser(prompt, guidance_scale), gaussian_noise(schedule, eta, generator)
    with torch.no_grad():
        for i in range(step):
            x = schedule.mean(i, x, denoiser(x, schedule.timesteps[i]), eta) + noise(i, x)
    return EditStart(x, step, schedule, prompt, guidance_scale)


def check_timestep(model: DiffusionModel, timestep: int) -> int:
    """A timestep of the model's training schedule: an integer in [0, num_train_timesteps)."""
    return checks.integer("timestep", timestep, 0, int(model.scheduler.config.num_train_timesteps) - 1)


# ------------------------------------------------------------------------------- Jacobians
def sample_mask(model: DiffusionModel, start: EditStart, mask: torch.Tensor) -> torch.Tensor:
    """A pixel mask (1×1×H×W at the input's working size) → the diffused sample's resolution."""
    if start.fit is not None:
        width, height = start.fit.working_size
        if tuple(mask.shape[-2:]) != (height, width):
            mask = resize(mask, (height, width))
        mask = pad_to(mask, (start.fit.padded_size[1], start.fit.padded_size[0]))
    return resize(mask, tuple(start.x_t.shape[-2:])).to(model.device)


def jacobian(model: DiffusionModel, start: EditStart, mask: torch.Tensor, space: str = "h",
             method: str = DEFAULT_JVP) -> MaskedJacobian:
    """J of mask ⊙ ε̂ with respect to h (or x_t) at the start; mask at the sample's resolution."""
    if space not in SPACES:
        raise RegionEditError(f"space must be 'h' or 'x', got {space!r}")
    check_region(mask)
    safe = functools.partial(hspace.autodiff_safe, model.unet)
    t = start.schedule.timesteps[start.step].to(model.device)
    text = model.encode_prompt(start.prompt) if model.is_text_conditional else None
    x_t = start.x_t.to(model.device, model.dtype)
    if space == "x":
        def fn(x: torch.Tensor) -> torch.Tensor:
            batch_text = text.expand(len(x), -1, -1) if text is not None else None
            return model.unet_eps(x, t, batch_text)

        return MaskedJacobian(fn, start.x_t.float(), mask, method, forward_ad_context=safe)
    with torch.no_grad():
        state = hspace.encode(model.unet, x_t, t, text.to(model.dtype) if text is not None else None)
    cache: dict[int, hspace.EncoderState] = {}

    def fn(h: torch.Tensor) -> torch.Tensor:
        batch = len(h)
        if batch not in cache:
            cache[batch] = state.repeat(batch)
        out = hspace.decode(model.unet, h.to(model.dtype), cache[batch])
        return model.to_eps(out.float(), x_t.float().expand(batch, -1, -1, -1), t.expand(batch))

    return MaskedJacobian(fn, state.h.float(), mask, method, forward_ad_context=safe)


def h_shape(model: DiffusionModel, start: EditStart) -> tuple[int, ...]:
    """Shape of h (without batch) for samples like the start's."""
    t = start.schedule.timesteps[start.step].to(model.device)
    text = model.encode_prompt(start.prompt).to(model.dtype) if model.is_text_conditional else None
    with torch.no_grad():
        return tuple(hspace.encode(model.unet, start.x_t.to(model.device, model.dtype), t, text).h.shape[1:])


# --------------------------------------------------------------------------------- editing
@contextlib.contextmanager
def shifted_h(model: DiffusionModel, delta: torch.Tensor | None) -> Iterator[None]:
    """Add ``delta`` to the mid-block output (h) in every UNet call inside the block."""
    if delta is None:
        yield
        return
    hook = model.unet.mid_block.register_forward_hook(lambda _m, _inp, out: out + delta.to(out.dtype))
    try:
        yield
    finally:
        hook.remove()


def sample_with_direction(
    model: DiffusionModel,
    start: EditStart,
    direction: torch.Tensor | None,
    strength: float,
    space: str = "h",
    eta: float = DEFAULT_ETA,
    asymmetric: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """Sample from the start to x0 with h ← h + γu at every step (or x_t ← x_t + γu once).

    ``asymmetric`` (Asyrp): x̂0 from the edited ε̂, the direction term from the original ε̂. With
    edit-friendly noise maps the stored maps are injected (η = 1); otherwise fresh noise from
    ``seed`` (η = 0: deterministic DDIM).
    """
    if space not in SPACES:
        raise RegionEditError(f"space must be 'h' or 'x', got {space!r}")
    strength, eta, seed = checks.number("strength", strength), checks.number("eta", eta, 0, 1), checks.seed(seed)
    schedule, x = start.schedule, start.x_t.to(model.device).float()
    delta = None
    if direction is not None and strength != 0:
        if space == "x" and tuple(direction.shape) != tuple(start.x_t.shape[1:]):
            raise RegionEditError(f"x-space direction of shape {tuple(direction.shape)} does not fit a sample of "
                                  f"shape {tuple(start.x_t.shape[1:])}")
        delta = strength * direction.to(model.device).unsqueeze(0)
        if space == "x":
            x, delta = x + delta, None
    if start.noise_maps is not None:
        maps = start.noise_maps.to(model.device)
        noise, eta = stored_noise(maps.zs, maps.noise_scale), maps.eta
    else:
        noise = gaussian_noise(schedule, eta, torch.Generator().manual_seed(seed))
    denoiser = model.denoiser(start.prompt, start.guidance_scale)
    with torch.no_grad():
        for i in range(start.step, len(schedule)):
            t = schedule.timesteps[i]
            with shifted_h(model, delta):
                eps = denoiser(x, t)
            eps_direction = None
            if asymmetric and delta is not None:
                eps_direction = denoiser(x, t)
            x = schedule.mean(i, x, eps, eta, eps_direction) + noise(i, x)
    return x


def to_pixels(model: DiffusionModel, start: EditStart, sample: torch.Tensor) -> torch.Tensor:
    """Decode and crop: 1×3×H×W in [0, 1] at the input's working size."""
    pixels = model.decode(sample)
    if start.fit is not None:
        pixels = start.fit.crop(pixels)
    return from_model_range(pixels)
