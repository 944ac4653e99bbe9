"""`regionedit bench training`: where a training step of each embedded toy model spends its time.

For each model, alone on the device: the stream's CPU half (parameters, plans, token ids; one
thread, as in a data worker), its device half (rendering, encoding to latents, text encoding) and
one optimiser step (forward, backward, AdamW, EMA) on a fixed batch. Medians of ``repeats`` runs
after a warm-up. The latent models train from a pool (their device half is paid once per
``refresh_every`` steps); the step is what every step costs.
The concurrent training of `bench/train_toy_models.sh` is slower than the sum of these when the
processes contend for the GPU.
"""

from __future__ import annotations

import statistics
import time

import torch

from regionedit.bench import machine
from regionedit.toyworld import latent, models


def _median_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _cases(batch: int, device: torch.device):
    """(name, stream, trainable module, loss of a materialised batch) per model, with random weights."""
    tokenizer = models.toy_tokenizer()
    from transformers import CLIPModel, CLIPTextModel

    clip = CLIPModel(models.clip_config(tokenizer))
    encode = models.TextEncoding(CLIPTextModel(clip.config.text_config).to(device).eval().requires_grad_(False))
    alphas = models.schedule().alphas_cumprod.to(device)
    yield "faces-ddpm", models.FaceStream(batch), models.faces_unet(), lambda m: models.diffusion_loss(m, alphas)
    vae = latent.toy_autoencoder()
    yield ("scenes-vae", latent.WorldImages(batch), vae, lambda m: lambda x: latent.autoencoder_loss(m, x))
    encoding = latent.LatentEncoding(vae.to(device).eval().requires_grad_(False), encode)
    latent_alphas = latent.latent_schedule().alphas_cumprod.to(device)
    yield ("scenes-t2i", latent.LatentCaptionStream(tokenizer, encoding, batch), latent.latent_unet(latent.LATENT_CHANNELS),
           lambda m: latent.latent_diffusion_loss(m, latent_alphas))
    yield ("scenes-instruct", latent.LatentInstructionStream(tokenizer, encoding, batch),
           latent.latent_unet(2 * latent.LATENT_CHANNELS), lambda m: latent.latent_diffusion_loss(m, latent_alphas))
    yield ("scenes-clip", models.ClipStream(tokenizer, batch), clip,
           lambda m: lambda pair: m(input_ids=pair[1], pixel_values=pair[0], return_loss=True).loss)


def bench_training(device: torch.device, batch: int = 256, repeats: int = 5, compile: bool = False) -> dict:
    """``compile``: also time each step with torch.compile (``compiled_step_s``; the compilation
    itself is the warm-up, reported as ``compile_s``)."""
    result = {"benchmark": "training", "device": str(device), "batch": batch, "repeats": repeats, "models": {},
              "machine": machine()}
    for name, stream, module, make_loss in _cases(batch, device):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            cpu_half = _median_seconds(lambda stream=stream: stream.make(0), torch.device("cpu"), repeats)
        finally:
            torch.set_num_threads(threads)
        item = stream.make(0)
        device_half = _median_seconds(lambda stream=stream, item=item: stream.materialise(item, device), device, repeats)
        trainer = models.Trainer(module, device, 4e-4)
        data = stream.materialise(item, device)
        loss_of = make_loss(trainer.module)

        def step(trainer=trainer, loss_of=loss_of, data=data):
            with trainer.autocast:
                loss = loss_of(data)
            trainer.step(loss)

        step_s = _median_seconds(step, device, repeats)
        if compile:
            compiled = models.Trainer(module, device, 4e-4, compile=True)
            compiled_loss = make_loss(compiled.forward)

            def compiled_step(trainer=compiled, loss_of=compiled_loss, data=data):
                with trainer.autocast:
                    loss = loss_of(data)
                trainer.step(loss)

            began = time.perf_counter()
            compiled_step()
            result.setdefault("compile_s", {})[name] = round(time.perf_counter() - began, 1)
            result.setdefault("compiled_step_s", {})[name] = round(_median_seconds(compiled_step, device, repeats), 4)
        result["models"][name] = {"cpu_half_s": round(cpu_half, 4), "device_half_s": round(device_half, 4),
                                  "step_s": round(step_s, 4),
                                  "steps_per_s_if_serial": round(1 / (device_half + step_s), 2),
                                  "parameters": sum(p.numel() for p in module.parameters())}
    return result
