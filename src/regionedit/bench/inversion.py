"""`regionedit bench inversion`: step-by-step vs timestep-batched edit-friendly inversion.

Both run in one process on the same model, image, prompt and seed; the reconstruction error of
each is measured by running the reverse process with the stored noise maps.
"""

from __future__ import annotations

import torch
from PIL import Image
from skimage import data as skimage_data

from regionedit import defaults
from regionedit.bench import machine, timed
from regionedit.core.inversion import invert, sample_from_noise_maps
from regionedit.models import DiffusionModel, load_model
from regionedit.models.tiny import sd15_sized_random

SD15_RANDOM = "random/sd-1.5"


def bench_model(name: str, device: torch.device, dtype: torch.dtype | None) -> DiffusionModel:
    if name == SD15_RANDOM:
        return DiffusionModel(**sd15_sized_random(), name=name, device=device, dtype=dtype)
    return load_model(name, device=device, dtype=dtype)


def bench_inversion(
    model_name: str,
    device: torch.device,
    dtype: torch.dtype | None = None,
    size: int | None = None,
    steps: int = defaults.DDPM_STEPS,
    batch_size: int = defaults.DDPM_BATCH_SIZE,
    prompt: str = "a photo of an astronaut",
    guidance_scale: float = defaults.DDPM_SOURCE_GUIDANCE,
    seed: int = 0,
) -> dict:
    model = bench_model(model_name, device, dtype)
    size = size or model.native_resolution
    image = Image.fromarray(skimage_data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)
    prompt = prompt if model.is_text_conditional else None
    kwargs = dict(prompt=prompt, guidance_scale=guidance_scale, num_inference_steps=steps, seed=seed, progress=False)

    invert(model, image, **{**kwargs, "num_inference_steps": 2})  # warm-up: kernels, caches, prompt
    sequential_s, sequential = timed(lambda: invert(model, image, batched=False, **kwargs), device)
    batched_s, batched = timed(lambda: invert(model, image, batched=True, batch_size=batch_size, **kwargs), device)

    denoiser = model.denoiser(prompt, guidance_scale)
    errors = {}
    for label, inversion in (("batched", batched), ("sequential", sequential)):
        reconstruction = sample_from_noise_maps(denoiser, inversion)
        errors[label] = (reconstruction - inversion.x0).abs().max().item()
    return {
        "benchmark": "inversion",
        "model": model_name,
        "model_info": model.describe(),
        "device": str(device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "size": size,
        "steps": steps,
        "batch_size": batch_size,
        "guidance_scale": guidance_scale,
        "sequential_s": round(sequential_s, 4),
        "batched_s": round(batched_s, 4),
        "speedup": round(sequential_s / batched_s, 3),
        "recon_max_abs_err": errors["batched"],
        "recon_max_abs_err_sequential": errors["sequential"],
        "maps_max_abs_diff": (batched.zs - sequential.zs).abs().max().item(),
        "reconstruction_space": "latent" if model.is_latent else "pixel",
        "machine": machine(),
    }
