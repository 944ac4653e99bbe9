"""Measuring the embedded toy-world models, each by the figure its quality bar is set on
(:mod:`regionedit.toyworld.bars`); every figure is read on held-out renders by the world's probe or
ground truth:

- faces-ddpm: share of 256 samples that are valid faces — the probe reads the factors, the face
  re-rendered from them matches the sample (PSNR ≥ 18 dB) — and the Fréchet distance between
  probe features of samples and of renders;
- scenes-vae: reconstruction PSNR (encode's mode, then decode);
- scenes-t2i: share of 256 benchmark captions rendered with exactly the right objects and colours;
- scenes-instruct(-remove): edit success per action over the benchmark split (probe), and the
  background L1 outside the ground-truth mask, of the plain instruct model (no paste-back);
- scenes-clip: text → image top-1 retrieval among 100 candidates;
- scenes-clipseg: mean IoU of the located mask (K = 150) with the ground truth;
- speed: seconds for a 20-step guided sample at 64² on 2 CPU threads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from regionedit import metrics
from regionedit.core.sampling import gaussian_noise, sample
from regionedit.core.schedule import Schedule
from regionedit.errors import RegionEditError
from regionedit.images import to_model_range
from regionedit.toyworld import faces as faces_world
from regionedit.toyworld import probes
from regionedit.toyworld import scenes as scenes_world
from regionedit.toyworld.benchmark import BenchItem, MethodOutput, run_benchmark
from regionedit.toyworld.splits import split_seeds


def generate(model, count: int, prompts: list[str] | None = None, steps: int = 50, guidance: float = 5.0,
             seed: int = 0, chunk: int = 64) -> torch.Tensor:
    """count samples in [0, 1] at the model's native resolution (DDIM, η = 0), with prompts for
    text models."""
    schedule = Schedule.from_scheduler(model.scheduler, steps)
    generator = torch.Generator().manual_seed(seed)
    size = model.native_resolution // model.vae_scale_factor  # latent models diffuse 1/8 of the pixels' side
    out = []
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        x = torch.randn(n, model.channels, size, size, generator=generator).to(model.device)
        denoiser = model.denoiser(prompts[start : start + n] if prompts else None, guidance if prompts else 1.0)
        x = sample(denoiser, schedule, x, gaussian_noise(schedule, 0.0, generator), eta=0.0)
        out.append(((model.decode(x) + 1) / 2).cpu())
    return torch.cat(out)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)  # SciPy ≥ 1.18 has no `disp`; the default returns the root alone
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def valid_faces(images: torch.Tensor, net) -> torch.Tensor:
    """Analysis by synthesis: re-render the factors the probe reads; valid if PSNR ≥ 18 dB."""
    reading = probes.predict(net, images)
    factors = {}
    for name, factor in faces_world.FACTORS.items():
        value = reading[name]
        factors[name] = factor.low + value * (factor.high - factor.low) if factor.kind == "continuous" else value
    renders = faces_world.render(factors, size=images.shape[-1]).images
    return metrics.psnr(images, renders) >= 18.0


def eval_faces_ddpm(model, count: int = 256, steps: int = 50) -> dict:
    net = probes.load_probe("faces", device=model.device)
    samples = generate(model, count, steps=steps)
    renders = faces_world.generate_faces(split_seeds("validation", count)).images
    with torch.no_grad():
        fake, real = net.embed(samples.to(model.device)).cpu().numpy(), net.embed(renders.to(model.device)).cpu().numpy()
    return {"valid_face_share": round(float(valid_faces(samples, net).float().mean()), 4),
            "probe_frechet_distance": round(frechet_distance(fake, real), 3),
            "probe_frechet_distance_renders_vs_renders": round(frechet_distance(
                real, net.embed(faces_world.generate_faces(split_seeds("validation", count, count)).images.to(model.device))
                .detach().cpu().numpy()), 3),
            "count": count, "steps": steps}


def eval_t2i(model, count: int = 256, steps: int = 50, guidance: float = 5.0, split: str = "benchmark") -> dict:
    scenes = scenes_world.generate_scenes(split_seeds(split, count))
    captions = [scenes.caption(i) for i in range(count)]
    samples = generate(model, count, captions, steps, guidance)
    reading = probes.predict(probes.load_probe("scenes", device=model.device), samples)
    truth = probes.scene_labels(scenes.params)
    correct = torch.ones(count, dtype=torch.bool)
    for kind in scenes_world.KINDS:
        present, _ = truth[f"{kind}_present"]
        colour, _ = truth[f"{kind}_colour"]
        correct &= reading[f"{kind}_present"].bool() == present.bool().cpu()
        correct &= ~present.bool().cpu() | (reading[f"{kind}_colour"] == colour.cpu())
    return {"caption_correct_share": round(float(correct.float().mean()), 4), "count": count, "steps": steps,
            "guidance": guidance, "split": split}


class InstructBaseline:
    """The plain instruct model: its output as is, no localisation (InstructPix2Pix's behaviour)."""

    name = "instruct"

    def __init__(self, world: str, model: str = "toy/scenes-instruct", device: str | None = None,
                 num_inference_steps: int = 20, guidance_scale: float = 7.5, image_guidance_scale: float = 1.5, seed: int = 0):
        from regionedit.models import load_model

        if world != "scenes":
            raise RegionEditError("the instruct baseline is benchmarked on scenes")
        self.model = load_model(model, device=device)
        self.settings = (num_inference_steps, guidance_scale, image_guidance_scale, seed)

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        """All items in one batched sampling run (each image's noise from the seed alone, so the
        result of an item does not depend on its batch)."""
        from regionedit.methods.zone import fused_sampling

        steps, text, image_guidance, seed = self.settings
        fitted = [self.model.fit_image(item.image.unsqueeze(0)) for item in items]
        pixels = torch.cat([p for p, _ in fitted])
        latents, _ = fused_sampling(self.model, None, [item.instruction for item in items], pixels, torch.zeros(len(items)),
                                    steps, text, image_guidance, 0.0, [seed] * len(items), None, False)
        edited = (self.model.decode(latents) + 1) / 2
        return [MethodOutput(fit.crop(edited[i : i + 1])[0].cpu()) for i, (_, fit) in enumerate(fitted)]


def eval_instruct(model_name: str, count: int = 400, device=None, split: str = "benchmark") -> dict:
    """Edit success per action and background L1 outside the GT mask (no paste-back), 20 steps."""
    result = run_benchmark("scenes", InstructBaseline("scenes", model=model_name, device=device), count=count, split=split)
    rows = result["results"]
    return {"edit_success": {k: v["edit_success"] for k, v in rows.items()},
            "background_l1": {k: v["background_l1"] for k, v in rows.items()}, "count": count, "split": split}


def eval_vae(count: int = 256, device=None, split: str = "benchmark", location: str | Path = "toy/scenes-vae") -> dict:
    """Reconstruction PSNR of a toy autoencoder (an embedded ``toy/…`` name or a folder) on ``split``
    renders of the world its card names (scenes unless it says faces): encode's mode, then decode."""
    from diffusers import AutoencoderKL

    from regionedit.models.loading import embedded_components
    from regionedit.toyworld.latent import reconstruction_psnr

    folder = embedded_components().get(str(location), Path(location))
    card = folder / "card.json"
    world = (json.loads(card.read_text()).get("settings", {}).get("world") if card.exists() else None) or "scenes"
    vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).to(device or "cpu")
    return {"reconstruction_psnr": reconstruction_psnr(vae.eval(), count, split, world=world), "count": count,
            "split": split, "world": world, "scaling_factor": vae.config.scaling_factor}


def eval_clip(scorer, count: int = 100) -> dict:
    scenes = scenes_world.generate_scenes(split_seeds("benchmark", count))
    images = scorer.image_embeddings(scenes.images)
    texts = scorer.text_embeddings([scenes.caption(i) for i in range(count)])
    top1 = (texts @ images.T).argmax(dim=1).cpu() == torch.arange(count)
    return {"text_to_image_top1": round(float(top1.float().mean()), 4), "candidates": count}


def eval_clipseg(segmenter, count: int = 200, threshold: float = 150, split: str = "benchmark") -> dict:
    """Over ``count`` scenes of ``split``, each with one object phrase: the mean IoU of the located
    mask (scores ≥ K) with the named object's visible mask where the object is present, and the share
    of empty masks where the phrase names an absent kind; the IoU also by the phrase's style (a bare
    kind, "the ball", or a coloured one, "a red ball" / "the red ball")."""
    from regionedit.toyworld.streams import object_phrases, phrase_masks

    scenes = scenes_world.generate_scenes(split_seeds(split, count))
    phrases, slots = object_phrases(scenes.params, torch.Generator().manual_seed(0))
    masks = phrase_masks(scenes.labels, torch.tensor(slots))
    ious, empty, bare = [], [], []
    for i, (phrase, mask) in enumerate(zip(phrases, masks, strict=True)):
        located = (segmenter.scores(scenes.images[i : i + 1], phrase) >= threshold).float().cpu()
        if slots[i] < 0:
            empty.append(float(located.sum() == 0))
        else:
            ious.append(float(metrics.mask_iou(located.view(1, -1), mask.view(1, -1))[0]))
            bare.append(len(phrase.split()) == 2)
    by_style = {style: round(float(np.mean([v for v, b in zip(ious, bare, strict=True) if b == is_bare])), 4)
                for style, is_bare in (("bare", True), ("coloured", False)) if is_bare in bare}
    return {"mean_iou": round(float(np.mean(ious)), 4), "count": len(ious), "mean_iou_by_style": by_style,
            "absent_empty_share": round(float(np.mean(empty)), 4) if empty else None, "absent_count": len(empty),
            "threshold": threshold, "split": split}


def sample_seconds(model, steps: int = 20, threads: int = 2, repeats: int = 3) -> float:
    """Seconds for one guided 20-step sample at 64² on ``threads`` CPU threads (text models: CFG 5,
    two branches; instruct models: text 7.5 / image 1.5, three branches): the fastest of ``repeats``
    timed runs after a warm-up, the figure least inflated by other work on the cores."""
    from regionedit.methods.zone import fused_sampling

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)

    def once() -> None:
        if model.is_instruct:
            source = to_model_range(scenes_world.generate_scenes(split_seeds("benchmark", 1)).images)
            fused_sampling(model, None, ["make the ball blue"], source, torch.zeros(1), steps, 7.5, 1.5, 0.0, [0], None, False)
        else:
            generate(model, 1, ["a red ball on grass"] if model.is_text_conditional else None, steps)

    def timed() -> float:
        began = time.perf_counter()
        once()
        return time.perf_counter() - began

    try:
        once()  # warm-up
        return round(min(timed() for _ in range(repeats)), 3)
    finally:
        torch.set_num_threads(previous)
