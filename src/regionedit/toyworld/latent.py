"""Latent toy models, designed to train on 2 CPU cores: a toy Stable Diffusion in miniature.

- ``scenes-vae``: an ``AutoencoderKL`` (the class SD's VAE is), 64²×3 → 16²×4, trained on scene
  renders with an MSE reconstruction loss and a tiny KL term; its ``scaling_factor`` is set after
  training to 1/std of the latents, as SD's is. Stored once; the diffusion models link to it.
- ``scenes-t2i`` / ``scenes-instruct`` / ``scenes-instruct-remove``: ``UNet2DConditionModel`` on
  16² latents (4 input channels, 8 for instruct: x_t ‖ unscaled source latents as in IP2P),
  cross-attention only at 8² and 4² (a 16² attention layer costs 2.7× the step time), the pooled
  text added to the timestep embedding (diffusers' ``addition_embed_type="text"``, needs no extra
  input), v-prediction on a cosine schedule.

Training reads a **latent pool**: rendered examples are encoded once (latents and text states) and
held in memory; every ``refresh_every`` steps a fresh batch replaces random slots (the same
:class:`~regionedit.toyworld.streams.Pool` as the pixel models). The instruct pool also keeps the
ground-truth edit mask at latent size, so the loss can weigh the edited region (``edit_weight``):
most of a target is a copy of the source, and the uniform loss spends most of its signal there.

- ``faces-vae`` / ``faces-ldm`` (RBE's faces model: more local and transferable eye directions than the
  pixel ``faces-ddpm``, at 1/16 of its cost per sample): the same autoencoder tuned from ``scenes-vae`` on face renders, and an
  unconditional ``UNet2DModel`` on its latents (16² → 8², self-attention and h-space at 8²), v-prediction as above.

Where we differ from SD/IP2P: tiny widths, attention only at 8²/4², the pooled-text embedding, an
edit-region loss weight (off when ``edit_weight`` = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel

from regionedit.images import to_model_range
from regionedit.toyworld import faces as faces_world
from regionedit.toyworld import scenes as scenes_world
from regionedit.toyworld.architectures import TEXT_WIDTH
from regionedit.toyworld.streams import (
    DiffusionBatch,
    Pool,
    Stream,
    batches,
    drop,
    render_scene_images,
    token_ids,
)
from regionedit.toyworld.training import Budget, Trainer, forward_noise

LATENT_SIZE, LATENT_CHANNELS = 16, 4


# ---------------------------------------------------------------------------- architectures
def toy_autoencoder() -> AutoencoderKL:
    """64² → 16²×4; no attention in the mid block (the toy images are local; it would cost CPU time)."""
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=64,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         block_out_channels=(32, 64, 96), layers_per_block=1, norm_num_groups=16,
                         mid_block_add_attention=False)


def latent_schedule() -> DDIMScheduler:
    """A 1000-step cosine schedule predicting v (as SD 2's 768 model)."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                         set_alpha_to_one=True, prediction_type="v_prediction")


def faces_latent_unet(width: tuple[int, ...] = (64, 96)) -> UNet2DModel:
    """The unconditional latent UNet of toy faces, one level per width, self-attention at every level
    below 16². The default, 16² → 8² with its mid block at 8², has RBE's h-space at 96×8×8 as
    faces-ddpm's (1.8 M parameters, ~1 s per batch-64 step on one core thread; faces-ddpm: 14):
    with the first candidate's third level (``(48, 64, 96)``, h-space 96×4×4, 2.1 M) the eye
    directions kept 0.77 of their change inside the eye region on validation faces, at 8×8 0.94
    (``bench/results/faces-latent-8x8-validation-cpu.json``)."""
    levels = len(width)
    return UNet2DModel(sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
                       block_out_channels=width, layers_per_block=1, norm_num_groups=16, attention_head_dim=32,
                       down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * (levels - 1),
                       up_block_types=("AttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",))


def latent_unet(in_channels: int = LATENT_CHANNELS, width: tuple[int, ...] = (48, 64, 96)) -> UNet2DConditionModel:
    """The latent UNet: 16² → 8² → 4², cross-attention at 8² and 4² (and in the mid block)."""
    return UNet2DConditionModel(sample_size=LATENT_SIZE, in_channels=in_channels, out_channels=LATENT_CHANNELS,
                                block_out_channels=width, layers_per_block=1, norm_num_groups=16,
                                cross_attention_dim=TEXT_WIDTH, attention_head_dim=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                addition_embed_type="text", encoder_hid_dim=None, addition_embed_type_num_heads=4)


# ------------------------------------------------------------------------------- autoencoder
# the toy worlds' own "sample and render these seeds" functions
WORLD_RENDERERS = {"scenes": scenes_world.generate_scenes, "faces": faces_world.generate_faces}


def _check_world(world: str) -> None:
    if world not in WORLD_RENDERERS:
        raise ValueError(f"unknown toy world {world!r} ({', '.join(WORLD_RENDERERS)})")


def render_world(world: str, seeds, device="cpu") -> torch.Tensor:
    """Renders (B×3×64×64 in [0, 1]) of toy scenes or faces drawn from ``seeds``."""
    _check_world(world)
    return WORLD_RENDERERS[world](seeds, device=device).images


class WorldImages(Stream):
    """Renders of the train split of a toy world (``scenes`` or ``faces``) in [-1, 1]."""

    def __init__(self, batch: int, seed: int = 0, world: str = "scenes"):
        super().__init__(batch, seed)
        _check_world(world)
        self.world = world

    def make(self, b):
        return {"seeds": self.seeds(b)}

    def materialise(self, item, device):
        return to_model_range(render_world(self.world, item["seeds"], device))


def train_autoencoder(budget: Budget, batch: int = 32, learning_rate: float = 1e-3, kl_weight: float = 1e-6,
                      device="cpu", log=None, checkpoint=None, seed: int = 0, vae: AutoencoderKL | None = None,
                      world: str = "scenes"):
    """MSE + ``kl_weight``·KL on fresh renders of ``world``; returns the EMA autoencoder and the steps run."""
    torch.manual_seed(seed)
    trainer = Trainer(vae if vae is not None else toy_autoencoder(), device, learning_rate, ema_decay=0.998)
    data = batches(WorldImages(batch, seed, world), device)
    steps = trainer.run(data, lambda x: autoencoder_loss(trainer.module, x, kl_weight), budget, log, checkpoint)
    return trainer.ema, steps


def autoencoder_loss(vae: AutoencoderKL, x: torch.Tensor, kl_weight: float = 1e-6) -> torch.Tensor:
    """Reconstruction MSE of a posterior sample, plus a small KL term that keeps the latents bounded."""
    posterior = vae.encode(x).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    return F.mse_loss(reconstruction.float(), x) + kl_weight * posterior.kl().mean()


@torch.no_grad()
def set_scaling_factor(vae: AutoencoderKL, count: int = 512, batch: int = 64, world: str = "scenes") -> float:
    """SD's recipe: scale latents to unit standard deviation (measured on train-split renders)."""
    stream = WorldImages(batch, seed=7, world=world)
    device = next(vae.parameters()).device
    latents = [vae.encode(stream.materialise(stream.make(b), device)).latent_dist.mode() for b in range(-(-count // batch))]
    factor = float(1.0 / torch.cat(latents).float().std())
    vae.register_to_config(scaling_factor=round(factor, 5))
    return factor


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, count: int = 256, split: str = "benchmark", batch: int = 64,
                        world: str = "scenes") -> float:
    """Mean PSNR (dB, images in [0, 1]) of encode(mode) → decode on ``count`` renders of ``world``'s ``split``."""
    from regionedit import metrics
    from regionedit.toyworld.splits import split_seeds

    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    values = []
    for start in range(0, count, batch):
        images = render_world(world, split_seeds(split, min(batch, count - start), start), device)
        z = vae.encode(to_model_range(images).to(dtype)).latent_dist.mode()
        out = (vae.decode(z).sample.float().clamp(-1, 1) + 1) / 2
        values.append(metrics.psnr(out.cpu(), images.cpu()))
    return round(float(torch.cat(values).mean()), 3)


# ---------------------------------------------------------------------------- latent streams
@dataclass
class LatentBatch(DiffusionBatch):
    weight: torch.Tensor | None = None  # B×1×16×16 loss weight (instruct: the edit region)


class LatentEncoding:
    """The device half shared by the latent streams: frozen autoencoder and text encoder."""

    def __init__(self, vae: AutoencoderKL, encode_text):
        self.vae, self.encode_text = vae, encode_text

    @torch.no_grad()
    def latents(self, images01: torch.Tensor, scaled: bool = True) -> torch.Tensor:
        z = self.vae.encode(to_model_range(images01)).latent_dist.mode().float()
        return z * self.vae.config.scaling_factor if scaled else z


class LatentWorldImages(WorldImages):
    """Latents of a toy world's train renders, unconditional (the latent faces model)."""

    def __init__(self, encoding: LatentEncoding | None, batch: int, world: str = "faces", seed: int = 0):
        super().__init__(batch, seed, world)
        self.encoding = encoding

    def materialise(self, item, device):
        return LatentBatch(self.encoding.latents(render_world(self.world, item["seeds"], device)))


class LatentCaptionStream(Stream):
    """(scene latents, caption states) with 10 % of captions dropped for classifier-free guidance."""

    def __init__(self, tokenizer, encoding: LatentEncoding | None, batch: int, dropout: float = 0.1, seed: int = 0):
        super().__init__(batch, seed)
        self.tokenizer, self.encoding, self.dropout = tokenizer, encoding, dropout

    def make(self, b):
        params = scenes_world.sample_params(self.seeds(b))
        captions = [scenes_world.scene_caption(params, i) for i in range(self.batch)]
        return {"params": params, "ids": token_ids(self.tokenizer, drop(captions, self.dropout, self.generator(b)))}

    def materialise(self, item, device):
        images, _ = render_scene_images(item["params"], device)
        return LatentBatch(self.encoding.latents(images), self.encoding.encode_text(item["ids"], device))


class LatentInstructionStream(Stream):
    """Instruction triplets as latents, with IP2P's condition dropout (5 % without the instruction,
    5 % without the source image, 5 % without both) and the edit region (target ≠ source, max-pooled
    to latent size) for the loss weight. With ``remove_share``, that fraction of each batch is
    removals (the rest: any action)."""

    def __init__(self, tokenizer, encoding: LatentEncoding | None, batch: int, remove_share: float | None = None,
                 seed: int = 0):
        super().__init__(batch, seed)
        self.tokenizer, self.encoding, self.remove_share = tokenizer, encoding, remove_share

    def make(self, b):
        seeds = self.seeds(b)
        cut = 0 if self.remove_share is None else int(round(len(seeds) * self.remove_share))
        parts = [scenes_world.plan_edits(part, actions) for part, actions in
                 ((seeds[:cut], ["remove"]), (seeds[cut:], scenes_world.ACTIONS)) if part]
        source = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
        target = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
        instructions = [plan["instruction"] for p in parts for plan in p[2]]
        draw = torch.rand(len(seeds), generator=self.generator(b))
        no_text = ((draw < 0.05) | ((draw >= 0.10) & (draw < 0.15))).tolist()
        texts = ["" if dropped else text for text, dropped in zip(instructions, no_text, strict=True)]
        return {"source": source, "target": target, "ids": token_ids(self.tokenizer, texts),
                "no_image": (draw >= 0.05) & (draw < 0.15)}

    def materialise(self, item, device):
        source, _ = render_scene_images(item["source"], device)
        target, _ = render_scene_images(item["target"], device)
        changed = ((source - target).abs().amax(dim=1, keepdim=True) > 0.02).float()
        region = F.adaptive_max_pool2d(changed, LATENT_SIZE)
        no_image = item["no_image"].to(device).view(-1, 1, 1, 1)
        source_latents = torch.where(no_image, torch.zeros(1, device=device), self.encoding.latents(source, scaled=False))
        return LatentBatch(self.encoding.latents(target), self.encoding.encode_text(item["ids"], device), source_latents,
                           region)


def min_snr_weight(alpha_bar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weight for v-prediction: min(SNR, γ) / (SNR + 1)."""
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / (snr + 1)


def latent_diffusion_loss(unet, alphas: torch.Tensor, edit_weight: float = 1.0, min_snr_gamma: float | None = 5.0):
    """v-prediction MSE at a uniformly drawn timestep, weighted by min-SNR-γ and, where the batch
    carries an edit region, by ``edit_weight`` inside it."""

    def loss_of(batch: LatentBatch) -> torch.Tensor:
        t, a, noise, x_t = forward_noise(batch.x0, alphas)
        v = a.sqrt() * noise - (1 - a).sqrt() * batch.x0
        model_input = x_t if batch.source is None else torch.cat([x_t, batch.source], dim=1)
        condition = {} if batch.text is None else {"encoder_hidden_states": batch.text}
        prediction = unet(model_input, t, **condition).sample.float()
        error = (prediction - v) ** 2
        if batch.weight is not None and edit_weight != 1.0:
            error = error * (1 + (edit_weight - 1) * batch.weight)
        per_sample = error.mean(dim=(1, 2, 3))
        if min_snr_gamma is not None:
            per_sample = per_sample * min_snr_weight(alphas[t], min_snr_gamma)
        return per_sample.mean()

    return loss_of


@dataclass
class LatentRecipe:
    """The training choices measured in the ablations (bench/results/latent-ablation-*.json)."""

    learning_rate: float = 1e-3
    edit_weight: float = 1.0
    min_snr_gamma: float | None = None
    pool: int = 16384
    refresh_every: int = 4


def train_latent(unet: UNet2DConditionModel | UNet2DModel, stream: Stream, budget: Budget, recipe: LatentRecipe, device="cpu",
                 log=None, checkpoint=None, seed: int = 0) -> tuple[torch.nn.Module, int]:
    """Train a latent UNet on a pool of ``stream``'s batches; returns the EMA weights and steps run."""
    torch.manual_seed(seed)
    data = batches(stream, device)
    if recipe.pool:
        data = Pool(data, stream.batch, recipe.pool, recipe.refresh_every, seed)
    trainer = Trainer(unet, device, recipe.learning_rate)
    alphas = latent_schedule().alphas_cumprod.to(trainer.device)
    loss_of = latent_diffusion_loss(trainer.forward, alphas, recipe.edit_weight, recipe.min_snr_gamma)
    steps = trainer.run(data, loss_of, budget, log, checkpoint)
    return trainer.ema, steps
