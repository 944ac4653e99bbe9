"""`regionedit bench rdm`: the cost of RDM over plain sampling with the same model and steps.

All in one run on the same image: plain classifier-free-guided sampling; RDM with text
localisation, latent blending and paste-back but no gradient guidance; full RDM with CLIP
guidance inside the mask and the NERP loss outside.
"""

from __future__ import annotations

import torch

from regionedit.bench import machine, timed
from regionedit.core.sampling import gaussian_noise, sample
from regionedit.core.schedule import Schedule
from regionedit.methods import rdm
from regionedit.models import load_model
from regionedit.segment import load_clip, load_segmenter
from regionedit.toyworld.scenes import generate_edits
from regionedit.toyworld.splits import split_seeds


def bench_rdm(model_name: str, segmenter_name: str, clip_name: str, device: torch.device, steps: int = 50,
              repeats: int = 3) -> dict:
    model = load_model(model_name, device=device)
    segmenter = load_segmenter(segmenter_name, device)
    clip = load_clip(clip_name, device)
    size = model.native_resolution
    edits = generate_edits(split_seeds("validation", 1), size=size, actions=["change_colour"])
    image, locate, target = edits.source.images, edits.source_object[0], edits.target_object[0]
    schedule = Schedule.from_scheduler(model.scheduler, steps)
    shape = model.encode(model.fit_image(image)[0]).shape

    def plain():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=generator).to(device)
        return model.decode(sample(model.denoiser(target, rdm.DEFAULT_GUIDANCE), schedule, x, gaussian_noise(schedule, 0.0, generator), eta=0.0))

    def blended():
        return rdm.edit(model, image, target, locate=locate, segmenter=segmenter, threshold=1, num_inference_steps=steps,
                        clip_guidance_scale=0, nerp_mse=0, nerp_lpips=0, progress=False)

    def guided():
        return rdm.edit(model, image, target, locate=locate, segmenter=segmenter, clip=clip, threshold=1,
                        num_inference_steps=steps, progress=False)

    timings = {}
    for label, fn in (("plain", plain), ("rdm", blended), ("rdm_guided", guided)):
        fn()  # warm-up
        timings[label] = min(timed(fn, device)[0] for _ in range(repeats))
    return {
        "benchmark": "rdm", "model": model_name, "segmenter": segmenter_name, "clip": clip_name, "device": str(device),
        "steps": steps, "size": size, "repeats": repeats, "plain_s": round(timings["plain"], 4),
        "rdm_s": round(timings["rdm"], 4), "rdm_guided_s": round(timings["rdm_guided"], 4),
        "rdm_over_plain": round(timings["rdm"] / timings["plain"], 3),
        "rdm_guided_over_plain": round(timings["rdm_guided"] / timings["plain"], 3),
        "note": "rdm: localisation, blending and paste-back without gradient guidance; rdm_guided: CLIP inside + NERP "
                "outside (LPIPS only if installed). threshold 1 so that a random segmenter always finds a region.",
        "machine": machine(),
    }
