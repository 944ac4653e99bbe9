"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kadar & Michaeli, CVPR 2024).

Forward: draw every x_t *independently* from q(x_t | x0). Then for each step, with the source
prompt and CFG, μ_t = DDIM mean of x_{t-1} given x_t, and the noise map
z_t = (x_{t-1} - μ_t) / σ_t. Reverse: the η sampler fed the stored z_t reproduces x0 exactly.

Because all x_t are drawn before any UNet call, the z_t of different steps are independent:
``batched=True`` computes many steps in one UNet call. ``batched=False`` is the paper's loop,
which also re-derives each x_{t-1} from (μ_t, z_t) before the next step, as the released code does.

Where we differ from the released code (documented in README.md):
- the last noise map (x_1 → x0) is kept instead of zeroed, so reconstruction is exact; where the
  schedule's last step has σ = 0 (final ᾱ = 1) the map holds the raw residual (scale 1);
- for η ≠ 1 the standard DDIM mean √(1-ᾱ_prev-σ_η²) is used (the code mixes η and η²).

``record_attention=True`` also keeps the source text row's attention maps of every step
(:class:`~regionedit.core.attention.SourceAttention`, in memory only, not in saved files): they are
the maps Prompt-to-Prompt's source row would compute, so a P2P edit then runs the plain edit's two
rows. Records over ``SOURCE_ATTENTION_BUDGET_MB`` (SD at 512², 100 steps) are dropped.

:func:`ddim_invert` gives the deterministic DDIM inversion in the same container (η = 0, zero
maps), for comparisons such as Prompt-to-Prompt on DDIM.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from regionedit import checks, defaults
from regionedit.core.attention import SourceAttention, recording_source_attention
from regionedit.core.sampling import Denoiser, sample, stored_noise
from regionedit.core.schedule import Schedule
from regionedit.errors import RegionEditError
from regionedit.images import read_tensors, write_tensors
from regionedit.models.backend import DiffusionModel, ImageFit

FORMAT = "regionedit.ddpm_inversion"
FORMAT_VERSION = 1
# The released code's defaults: 100 steps, source CFG 3.5, η = 1 (:mod:`regionedit.defaults`).
DEFAULT_STEPS = defaults.DDPM_STEPS
DEFAULT_SOURCE_GUIDANCE = defaults.DDPM_SOURCE_GUIDANCE
DEFAULT_ETA = defaults.DDPM_ETA
DEFAULT_BATCH_SIZE = defaults.DDPM_BATCH_SIZE


@dataclass(frozen=True)
class DDPMInversion:
    """Everything needed to reconstruct or edit one image in the edit-friendly noise space."""

    x0: torch.Tensor  # 1×C×h×w: the clean sample (VAE latents for latent models)
    xts: torch.Tensor  # N×C×h×w: x at timestep t_i, from the noisiest
    zs: torch.Tensor  # N×C×h×w: noise map of step i
    noise_scale: torch.Tensor  # (N,) σ_i, or 1 where σ_i = 0 (the map is then the residual)
    schedule: Schedule
    prompt: str | None
    guidance_scale: float
    eta: float
    seed: int | None
    model: str
    fit: ImageFit | None = None
    source_attention: SourceAttention | None = None  # with record_attention=True (not saved)

    @property
    def num_inference_steps(self) -> int:
        return len(self.schedule)

    @property
    def is_exact(self) -> bool:
        """Edit-friendly maps (η > 0) give x0 back exactly; a DDIM inversion (η = 0, zero maps) does not."""
        return self.eta > 0

    def to(self, device: torch.device | str) -> DDPMInversion:
        moved = {k: getattr(self, k).to(device) for k in ("x0", "xts", "zs")}
        return replace(self, **moved)

    def x_at(self, step: int) -> torch.Tensor:
        """x at the timestep of ``step`` (1×C×h×w)."""
        return self.xts[step : step + 1]

    def save(self, path: str | Path) -> Path:
        tensors = {
            "x0": self.x0, "xts": self.xts, "zs": self.zs, "noise_scale": self.noise_scale,
            "timesteps": self.schedule.timesteps, "alpha_bar": self.schedule.alpha_bar,
            "alpha_bar_prev": self.schedule.alpha_bar_prev,
        }
        meta = {
            "format_version": str(FORMAT_VERSION), "prompt": json.dumps(self.prompt),
            "guidance_scale": repr(self.guidance_scale), "eta": repr(self.eta), "seed": json.dumps(self.seed),
            "model": self.model, "fit": json.dumps(self.fit.to_dict() if self.fit else None),
        }
        return write_tensors(path, tensors, FORMAT, meta)

    @classmethod
    def load(cls, path: str | Path) -> DDPMInversion:
        """Read an inversion file; a damaged or tampered one is refused in one line."""
        tensors, meta = read_tensors(path, FORMAT, "inversion")
        try:
            fit = json.loads(meta["fit"])
            inversion = cls(
                x0=tensors["x0"], xts=tensors["xts"], zs=tensors["zs"], noise_scale=tensors["noise_scale"],
                schedule=Schedule(tensors["timesteps"], tensors["alpha_bar"], tensors["alpha_bar_prev"]),
                prompt=json.loads(meta["prompt"]), guidance_scale=float(meta["guidance_scale"]),
                eta=float(meta["eta"]), seed=json.loads(meta["seed"]), model=meta["model"],
                fit=ImageFit.from_dict(fit) if fit else None,
            )
            problem = _inconsistency(inversion)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:  # json.JSONDecodeError is a ValueError
            problem = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:120]
        if problem:
            raise RegionEditError(f"inversion file {path} is damaged or was edited: {problem}")
        return inversion


def _inconsistency(inversion: DDPMInversion) -> str | None:
    """What makes a loaded inversion unusable (wrong shapes, non-finite values, bad settings), or None."""
    steps, x0 = len(inversion.schedule.timesteps), inversion.x0
    if x0.dim() != 4 or len(x0) != 1:
        return f"x0 has shape {tuple(x0.shape)}, not 1×C×h×w"
    for name in ("xts", "zs"):
        if tuple(getattr(inversion, name).shape) != (steps, *x0.shape[1:]):
            return f"{name} has shape {tuple(getattr(inversion, name).shape)}, expected {(steps, *x0.shape[1:])}"
    schedule = inversion.schedule
    for name, values in (("noise_scale", inversion.noise_scale), ("alpha_bar", schedule.alpha_bar),
                         ("alpha_bar_prev", schedule.alpha_bar_prev)):
        if tuple(values.shape) != (steps,):
            return f"{name} has shape {tuple(values.shape)}, expected ({steps},)"
    if steps < 1 or schedule.timesteps.dim() != 1 or schedule.timesteps.is_floating_point():
        return "timesteps must be a non-empty list of integers"
    for name in ("x0", "xts", "zs", "noise_scale"):
        if not torch.isfinite(getattr(inversion, name)).all():
            return f"{name} holds NaN or infinite values"
    if not 0 <= inversion.eta <= 1 or not math.isfinite(inversion.guidance_scale) or inversion.guidance_scale < 0:
        return f"eta {inversion.eta} or guidance_scale {inversion.guidance_scale} out of range"
    if not isinstance(inversion.model, str) or not (inversion.prompt is None or isinstance(inversion.prompt, str)):
        return "model or prompt is not text"
    fit = inversion.fit
    if fit is not None and not all(len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
                                   for size in (fit.original_size, fit.working_size, fit.padded_size)):
        return "fit sizes must be pairs of positive integers"
    return None


def _generator(seed: int | None, generator: torch.Generator | None) -> tuple[torch.Generator, int | None]:
    if generator is not None:
        return generator, seed
    seed = checks.seed(seed) if seed is not None else random.SystemRandom().randrange(2**31)
    return torch.Generator("cpu").manual_seed(seed), seed


def draw_noisy_path(x0: torch.Tensor, schedule: Schedule, generator: torch.Generator) -> torch.Tensor:
    """x_{t_i} = √ᾱ_i x0 + √(1-ᾱ_i) ε_i with independent ε_i (drawn on the CPU generator)."""
    eps = torch.randn((len(schedule), *x0.shape[1:]), generator=generator, dtype=torch.float32)
    return schedule.noise_to(torch.arange(len(schedule)), x0, eps.to(x0.device))


def invert(
    model: DiffusionModel,
    image=None,
    prompt: str | None = None,
    guidance_scale: float = DEFAULT_SOURCE_GUIDANCE,
    num_inference_steps: int = DEFAULT_STEPS,
    eta: float = DEFAULT_ETA,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batched: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_side: int | None = None,
    latents: torch.Tensor | None = None,
    progress: bool = True,
    record_attention: bool = False,
) -> DDPMInversion:
    """Invert an image into edit-friendly noise maps.

    ``image`` is a PIL image or a 1×3×H×W tensor in [0, 1]; alternatively pass the encoded sample
    x0 as ``latents`` (1×C×h×w, VAE latents for latent models). Defaults follow the paper's code:
    100 steps, η = 1, source CFG 3.5. ``prompt`` describes the image for text models ('' for an
    unconditional inversion) and must be None for unconditional models. ``record_attention``: keep
    the source text row's attention maps for Prompt-to-Prompt (text models).
    """
    if (image is None) == (latents is None):
        raise RegionEditError("give either an image or latents to invert")
    if record_attention and prompt is None:
        raise RegionEditError("record_attention keeps the source prompt's attention: give a prompt ('' for none)")
    checks.integer("num_inference_steps", num_inference_steps, 1)
    eta = checks.number("eta", eta, 0, 1, low_open=True)
    batch_size = checks.integer("batch_size", batch_size, 1)
    denoiser = model.denoiser(prompt, guidance_scale)
    fit = None
    if image is not None:
        pixels, fit = model.fit_image(image, max_side)
        latents = model.encode(pixels)
    schedule = Schedule.from_scheduler(model.scheduler, num_inference_steps)
    generator, seed = _generator(seed, generator)
    x0 = latents.to(model.device, torch.float32)
    xts = draw_noisy_path(x0, schedule, generator)
    sigma = schedule.sigma(eta)
    scale = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    with recording_source_attention(model.unet, len(schedule), record_attention) as recorder:
        if batched:
            xts, zs = _noise_maps_batched(denoiser, schedule, x0, xts, scale, eta, batch_size, progress, recorder)
        else:
            xts, zs = _noise_maps_sequential(denoiser, schedule, x0, xts, scale, eta, progress, recorder)
    return DDPMInversion(
        x0=x0, xts=xts, zs=zs, noise_scale=scale, schedule=schedule, prompt=prompt,
        guidance_scale=float(guidance_scale), eta=float(eta), seed=seed, model=model.name, fit=fit,
        source_attention=recorder.result() if recorder is not None else None,
    )


def ddim_invert(
    model: DiffusionModel,
    image=None,
    prompt: str | None = None,
    guidance_scale: float = DEFAULT_SOURCE_GUIDANCE,
    num_inference_steps: int = DEFAULT_STEPS,
    max_side: int | None = None,
    latents: torch.Tensor | None = None,
    progress: bool = True,
) -> DDPMInversion:
    """Deterministic DDIM inversion, as a :class:`DDPMInversion` with η = 0 and zero noise maps.

    ``xts[i]`` is the image inverted up to timestep t_i (x_{t_i} = DDIM⁻¹ step of x_{t_{i+1}}, ε̂
    evaluated at the lower timestep's sample, the usual approximation). Sampling from it with
    :func:`sample_from_noise_maps` is plain DDIM; unlike the edit-friendly maps it does not give
    x0 back exactly (the approximation and CFG both drift). For comparisons (P2P on DDIM).
    """
    if (image is None) == (latents is None):
        raise RegionEditError("give either an image or latents to invert")
    if num_inference_steps < 1:
        raise RegionEditError(f"num_inference_steps must be ≥ 1, got {num_inference_steps}")
    denoiser = model.denoiser(prompt, guidance_scale)
    fit = None
    if image is not None:
        pixels, fit = model.fit_image(image, max_side)
        latents = model.encode(pixels)
    schedule = Schedule.from_scheduler(model.scheduler, num_inference_steps)
    x0 = latents.to(model.device, torch.float32)
    xts = torch.empty((len(schedule), *x0.shape[1:]), device=x0.device)
    x = x0
    for i in tqdm(range(len(schedule) - 1, -1, -1), disable=not progress, desc="DDIM inversion", leave=False):
        with torch.no_grad():
            x = schedule.invert_step(i, x, denoiser(x, schedule.timesteps[i]))
        xts[i] = x[0]
    return DDPMInversion(
        x0=x0, xts=xts, zs=torch.zeros_like(xts), noise_scale=torch.ones(len(schedule), dtype=torch.float64),
        schedule=schedule, prompt=prompt, guidance_scale=float(guidance_scale), eta=0.0, seed=None,
        model=model.name, fit=fit,
    )


def _noise_maps_sequential(denoiser, schedule, x0, xts, scale, eta, progress, recorder=None):
    """The paper's loop: one step at a time, each x_{t-1} re-derived as μ_t + σ_t z_t."""
    xts = xts.clone()
    zs = torch.empty_like(xts)
    for i in tqdm(range(len(schedule)), disable=not progress, desc="inverting", leave=False):
        x_t = xts[i : i + 1]
        if recorder is not None:
            recorder.steps = [i]
        with torch.no_grad():
            mean = schedule.mean(i, x_t, denoiser(x_t, schedule.timesteps[i]), eta)
        target = xts[i + 1 : i + 2] if i + 1 < len(schedule) else x0
        zs[i] = ((target - mean) / float(scale[i]))[0]
        if i + 1 < len(schedule):
            xts[i + 1] = (mean + float(scale[i]) * zs[i])[0]
    return xts, zs


def _noise_maps_batched(denoiser, schedule, x0, xts, scale, eta, batch_size, progress, recorder=None):
    """All steps are independent given the drawn x_t: ``batch_size`` steps per UNet call."""
    targets = torch.cat([xts[1:], x0])
    zs = torch.empty_like(xts)
    chunks = torch.arange(len(schedule)).split(batch_size)
    for steps in tqdm(chunks, disable=not progress, desc="inverting", leave=False):
        x_t = xts[steps]
        if recorder is not None:
            recorder.steps = steps.tolist()
        with torch.no_grad():
            mean = schedule.mean(steps, x_t, denoiser(x_t, schedule.timesteps[steps]), eta)
        zs[steps] = (targets[steps] - mean) / schedule.at(scale, steps, x_t)
    return xts, zs


def sample_from_noise_maps(
    denoiser: Denoiser,
    inversion: DDPMInversion,
    start: int = 0,
    callback=None,
    progress: bool = False,
) -> torch.Tensor:
    """The reverse process: from x_{t_start}, DDPM steps that inject the stored noise maps."""
    if not 0 <= start < inversion.num_inference_steps:
        raise RegionEditError(
            f"skip must be in [0, {inversion.num_inference_steps}) for {inversion.num_inference_steps} steps, got {start}"
        )
    noise = stored_noise(inversion.zs, inversion.noise_scale)
    return sample(
        denoiser, inversion.schedule, inversion.x_at(start), noise,
        eta=inversion.eta, start=start, callback=callback, progress=progress,
    )
