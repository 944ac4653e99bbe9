"""The embedded toy-world models: architectures, training streams and the training loop.

- ``scenes-clip``: a small CLIP (vision and text towers) trained contrastively on (scene, caption);
  its text tower is the frozen text encoder of the scene diffusion models, as CLIP's is for SD.
- ``scenes-clipseg``: CLIPSeg on the toy CLIP, trained on (scene, object phrase) → visible mask.
- ``faces-ddpm``: an unconditional pixel DDPM (``UNet2DModel``, 64², cosine schedule).
- ``scenes-vae``, ``scenes-t2i``, ``scenes-instruct``, ``scenes-instruct-remove``: the latent
  models (a toy SD, InstructPix2Pix and MagicBrush), defined in :mod:`regionedit.toyworld.latent`.

A stream has two halves. Its CPU half (:meth:`Stream.make`: parameters, edit plans, token ids;
per-item Python) runs in DataLoader workers; its device half (:meth:`Stream.materialise`:
rendering, text encoding) runs in the trainer, on the GPU when there is one. Batch ``b`` always
holds train-split seeds ``[b·B, (b+1)·B)``, whatever the number of workers; the benchmark split is
never seen.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import CLIPConfig, CLIPModel, CLIPSegConfig, CLIPSegForImageSegmentation

from regionedit.metrics import clip_pixels
from regionedit.models.tokenizer import build_clip_tokenizer
from regionedit.toyworld import faces as faces_world
from regionedit.toyworld import scenes as scenes_world
from regionedit.toyworld.splits import split_seeds

TEXT_LENGTH = 32  # toy captions and instructions are short
TEXT_WIDTH = 128


def vocabulary() -> list[str]:
    """Every word of the toy captions and instructions (plus a few general ones)."""
    words = set(scenes_world.KINDS) | set(scenes_world.COLOURS) | set(scenes_world.GROUNDS)
    for phrase in scenes_world.GROUND_PHRASE:
        words |= set(phrase.split())
    for templates in scenes_world.PHRASINGS.values():
        for template in templates:
            words |= {w for w in template.replace("{", " ").replace("}", " ").split() if w.isalpha()}
    words |= {"a", "an", "the", "and", "nothing", "sky", "ground", "face", "scene", "picture", "object"}
    return sorted(words)


def toy_tokenizer():
    return build_clip_tokenizer(vocabulary(), model_max_length=TEXT_LENGTH)


# ---------------------------------------------------------------------------- architectures
def clip_config(tokenizer) -> CLIPConfig:
    """4-layer towers of width 128; 4-pixel patches (16×16 tokens at 64²) so that CLIPSeg on top
    of it can draw masks of objects a few pixels wide."""
    text = dict(vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
                num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=TEXT_LENGTH,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=4, num_attention_heads=4,
                  image_size=64, patch_size=4)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def clipseg_config(clip: CLIPConfig) -> CLIPSegConfig:
    return CLIPSegConfig(text_config=clip.text_config.to_dict(), vision_config=clip.vision_config.to_dict(),
                         projection_dim=clip.projection_dim, extract_layers=[1, 2, 3], reduce_dim=64,
                         decoder_num_attention_heads=4, decoder_intermediate_size=256)


def schedule() -> DDIMScheduler:
    """A 1000-step cosine schedule (predicting ε); DDIM picks the sampling steps."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                         set_alpha_to_one=True, prediction_type="epsilon")


def faces_unet() -> UNet2DModel:
    """2.9 M parameters; self-attention at 16²; h-space (the mid block) is 96×8×8."""
    return UNet2DModel(sample_size=64, block_out_channels=(32, 48, 64, 96), layers_per_block=2, norm_num_groups=16,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=32)


# ---------------------------------------------------------------------------------- streams
@dataclass
class DiffusionBatch:
    x0: torch.Tensor  # B×3×64×64 in [-1, 1]
    text: torch.Tensor | None = None  # B×L×D text states
    source: torch.Tensor | None = None  # B×3×64×64 source image (instruct models)


class Stream(IterableDataset):
    """Endless training batches: :meth:`make` (CPU, in workers) then :meth:`materialise` (device)."""

    def __init__(self, batch: int, seed: int = 0):
        self.batch, self.seed = batch, seed

    def seeds(self, b: int) -> list[int]:
        return split_seeds("train", self.batch, b * self.batch)

    def generator(self, b: int) -> torch.Generator:
        """Randomness of batch b that is not the scene's (dropout, phrase choice): a function of (seed, b)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + b)

    def __iter__(self):
        info = get_worker_info()
        b, stride = (info.id, info.num_workers) if info else (0, 1)
        while True:
            yield self.make(b)
            b += stride

    def make(self, b: int) -> dict:
        raise NotImplementedError

    def materialise(self, item: dict, device) -> object:
        raise NotImplementedError


def batches(stream: Stream, device, workers: int = 0) -> Iterator:
    """Materialised batches of ``stream`` in order; CPU halves in ``workers`` spawned processes."""
    on_gpu = torch.device(device).type == "cuda"
    loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=on_gpu,
                        multiprocessing_context="spawn" if workers else None, prefetch_factor=4 if workers else None,
                        persistent_workers=bool(workers), worker_init_fn=_one_thread if workers else None)
    for item in loader:
        yield stream.materialise(item, device)


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # several trainers share the machine's cores


class Pool:
    """A refreshing pool of materialised diffusion batches on the device: every batch is drawn from
    ``size`` examples, and every ``refresh_every`` steps one fresh stream batch overwrites random
    slots, so rendering costs 1/``refresh_every`` of a batch per step and each example is seen
    about ``refresh_every`` times. Draws come from a seeded generator: the run is repeatable."""

    def __init__(self, data: Iterator[DiffusionBatch], batch: int, size: int, refresh_every: int, seed: int = 0):
        first = [next(data) for _ in range(-(-size // batch))]
        self.kind = type(first[0])  # DiffusionBatch or a subclass with more fields (the latent pools')
        self.fields = {name: torch.cat([getattr(b, name) for b in first])[:size].half()
                       for name in first[0].__dict__ if getattr(first[0], name) is not None}
        self.data, self.batch, self.size, self.refresh_every, self.step = data, batch, size, refresh_every, 0
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        return self

    def __next__(self) -> DiffusionBatch:
        if self.step and self.step % self.refresh_every == 0:
            fresh = next(self.data)
            slots = torch.randperm(self.size, generator=self.generator)[: len(fresh.x0)]
            for name, values in self.fields.items():
                values[slots.to(values.device)] = getattr(fresh, name).half()
        self.step += 1
        pick = torch.randint(self.size, (self.batch,), generator=self.generator)
        return self.kind(**{name: values[pick.to(values.device)].float() for name, values in self.fields.items()})


def token_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids padded to TEXT_LENGTH with end-of-text, as the backend's ``encode_prompt`` pads."""
    return tokenizer(texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt").input_ids


def drop(texts: list[str], probability: float, generator: torch.Generator) -> list[str]:
    keep = torch.rand(len(texts), generator=generator) >= probability
    return [t if k else "" for t, k in zip(texts, keep.tolist(), strict=True)]


def render_scene_images(params: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = scenes_world.render(params, device=device)
    return scenes.images, scenes.labels


class FaceStream(Stream):
    def make(self, b):
        return {"factors": faces_world.sample_factors(self.seeds(b))}

    def materialise(self, item, device):
        return DiffusionBatch(faces_world.render(item["factors"], device=device).images * 2 - 1)


class TextEncoding:
    """The frozen text encoder's states for token ids (the diffusion streams' device half)."""

    def __init__(self, text_encoder):
        self.text_encoder = text_encoder

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, device) -> torch.Tensor:
        return self.text_encoder(ids.to(device))[0].float()


class ClipStream(Stream):
    """(scene, caption) pairs for the contrastive loss."""

    def __init__(self, tokenizer, batch: int, seed: int = 0):
        super().__init__(batch, seed)
        self.tokenizer = tokenizer

    def make(self, b):
        params = scenes_world.sample_params(self.seeds(b))
        captions = [scenes_world.scene_caption(params, i) for i in range(self.batch)]
        return {"params": params, "ids": token_ids(self.tokenizer, captions)}

    def materialise(self, item, device):
        images, _ = render_scene_images(item["params"], device)
        return clip_pixels(images, 64), item["ids"].to(device)


def object_phrases(params: dict, generator: torch.Generator) -> tuple[list[str], list[int]]:
    """One phrase per scene naming an object ("the ball", "a red ball", "the red ball") or, one time
    in five, a kind that is absent; and the named object's slot (−1: absent, an empty mask)."""
    phrases, slots = [], []
    for i in range(params["ground"].shape[0]):
        objects = scenes_world.scene_objects(params, i)
        absent = [k for k in scenes_world.KINDS if k not in {o["kind"] for o in objects}]
        if not objects or (absent and torch.rand(1, generator=generator).item() < 0.2):
            phrases.append(f"the {absent[int(torch.randint(len(absent), (1,), generator=generator))]}")
            slots.append(-1)
            continue
        obj = objects[int(torch.randint(len(objects), (1,), generator=generator))]
        style = int(torch.randint(3, (1,), generator=generator))
        phrases.append((f"the {obj['kind']}", f"{scenes_world.article(obj['colour'])} {obj['colour']} {obj['kind']}",
                        f"the {obj['colour']} {obj['kind']}")[style])
        slots.append(obj["slot"])
    return phrases, slots


def phrase_masks(labels: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """B×H×W visible masks of each scene's named slot (empty where the slot is −1)."""
    return (labels == (2 + slots.to(labels.device)).view(-1, 1, 1)).float() * (slots.to(labels.device) >= 0).view(-1, 1, 1)


class SegmentStream(Stream):
    """(scene, object phrase) → the object's visible mask; absent kinds as negatives."""

    def __init__(self, tokenizer, batch: int, seed: int = 0):
        super().__init__(batch, seed)
        self.tokenizer = tokenizer

    def make(self, b):
        params = scenes_world.sample_params(self.seeds(b))
        phrases, slots = object_phrases(params, self.generator(b))
        return {"params": params, "ids": token_ids(self.tokenizer, phrases), "slots": torch.tensor(slots)}

    def materialise(self, item, device):
        images, labels = render_scene_images(item["params"], device)
        return clip_pixels(images, 64), item["ids"].to(device), phrase_masks(labels, item["slots"])


# -------------------------------------------------------------------------------- training
@dataclass
class Budget:
    """Train for ``steps``, or until ``seconds`` of wall-clock time have passed, whichever comes first
    (the card records the steps actually run, so ``--steps`` reproduces a timed run)."""

    steps: int
    seconds: float | None = None


class Trainer:
    """AdamW (fused on a GPU), linear warm-up then a constant rate, gradient clipping at 1, an EMA
    copy (decay ramped as (1+t)/(10+t) up to ``ema_decay``), bf16 autocast on a GPU."""

    def __init__(self, module: torch.nn.Module, device, learning_rate: float, ema_decay: float = 0.999,
                 warmup: int = 200, weight_decay: float = 0.0, compile: bool = False):
        self.device = torch.device(device)
        self.module = module.to(self.device).train()
        self.ema = copy.deepcopy(self.module).eval().requires_grad_(False)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.ema_params = [p for p, q in zip(self.ema.parameters(), self.module.parameters(), strict=True) if q.requires_grad]
        on_gpu = self.device.type == "cuda"
        self.optimiser = torch.optim.AdamW(self.params, lr=learning_rate, weight_decay=weight_decay, fused=on_gpu or None)
        self.base_lr, self.ema_decay, self.warmup = learning_rate, ema_decay, warmup
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()
        if on_gpu:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.step_count = 0
        # torch.compile'd forward (the EMA and saved weights stay the plain module's); opt-in, not yet measured on a GPU
        self.forward = torch.compile(self.module) if compile else self.module

    def step(self, loss: torch.Tensor) -> None:
        for group in self.optimiser.param_groups:
            group["lr"] = self.base_lr * min(1.0, (self.step_count + 1) / self.warmup)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimiser.step()
        decay = min(self.ema_decay, (1 + self.step_count) / (10 + self.step_count))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.params, 1 - decay)
        self.step_count += 1

    def run(self, data: Iterator, loss_of: Callable[[object], torch.Tensor], budget: Budget, log: Callable | None = None,
            checkpoint: Callable[[torch.nn.Module, int], None] | None = None, checkpoint_seconds: float = 120.0) -> int:
        """Train on ``data`` within ``budget``; ``checkpoint(ema, steps)`` every ``checkpoint_seconds``.
        Returns the steps run."""
        began = last_checkpoint = time.perf_counter()
        log_every = max(1, min(500, budget.steps // 20))
        while self.step_count < budget.steps:
            batch = next(data)
            with self.autocast:
                loss = loss_of(batch)
            self.step(loss)
            now = time.perf_counter()
            if log and (self.step_count % log_every == 0 or self.step_count == budget.steps):
                log(f"step {self.step_count}/{budget.steps} loss {loss.item():.4f} ({now - began:.0f} s)")
            if checkpoint and now - last_checkpoint > checkpoint_seconds:
                checkpoint(self.ema, self.step_count)
                last_checkpoint = now
            if budget.seconds is not None and now - began > budget.seconds:
                if log:
                    log(f"time budget reached after {self.step_count} steps ({now - began:.0f} s)")
                break
        return self.step_count


def diffusion_loss(unet, alphas: torch.Tensor):
    """ε-prediction MSE at a uniformly drawn timestep."""

    def loss_of(batch: DiffusionBatch) -> torch.Tensor:
        x0 = batch.x0
        noise = torch.randn_like(x0)
        t = torch.randint(0, len(alphas), (len(x0),), device=x0.device)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        model_input = x_t if batch.source is None else torch.cat([x_t, batch.source], dim=1)
        if batch.text is None:
            prediction = unet(model_input, t).sample
        else:
            prediction = unet(model_input, t, encoder_hidden_states=batch.text).sample
        return F.mse_loss(prediction.float(), noise)

    return loss_of


@dataclass
class Speed:
    """Throughput options that change the data order or the kernels, not the model: ``pool`` > 0
    draws batches from a refreshing pool of that many examples (see :class:`Pool`); ``compile``
    runs the forward pass through torch.compile."""

    pool: int = 0
    refresh_every: int = 4
    compile: bool = False


def train_diffusion(unet, stream: Stream, budget: Budget, learning_rate: float = 4e-4, device="cpu",
                    workers: int = 0, log=None, checkpoint=None, seed: int = 0,
                    speed: Speed | None = None) -> tuple[torch.nn.Module, int]:
    """Train ``unet`` on ``stream``; returns the EMA weights and the steps run."""
    speed = speed or Speed()
    torch.manual_seed(seed)
    data = batches(stream, device, workers)
    if speed.pool:
        data = Pool(data, stream.batch, speed.pool, speed.refresh_every, seed)
    trainer = Trainer(unet, device, learning_rate, compile=speed.compile)
    alphas = schedule().alphas_cumprod.to(trainer.device)
    steps = trainer.run(data, diffusion_loss(trainer.forward, alphas), budget, log, checkpoint)
    return trainer.ema, steps


def train_clip(budget: Budget, batch: int = 256, learning_rate: float = 5e-4, device="cpu", workers: int = 0,
               log=None, checkpoint=None, seed: int = 0) -> tuple[CLIPModel, object, int]:
    """Contrastive (image, caption) training of the toy CLIP."""
    torch.manual_seed(seed)
    tokenizer = toy_tokenizer()
    data = batches(ClipStream(tokenizer, batch, seed), device, workers)
    trainer = Trainer(CLIPModel(clip_config(tokenizer)), device, learning_rate, weight_decay=0.01)

    def loss_of(pair):
        pixels, ids = pair
        return trainer.module(input_ids=ids, pixel_values=pixels, return_loss=True).loss

    steps = trainer.run(data, loss_of, budget, log, checkpoint)
    return trainer.ema, tokenizer, steps


def train_clipseg(clip: CLIPModel, tokenizer, budget: Budget, batch: int = 128, learning_rate: float = 3e-4,
                  device="cpu", workers: int = 0, log=None, checkpoint=None, seed: int = 0):
    """CLIPSeg on the toy CLIP's towers, trained on (scene, object phrase) → visible mask. Unlike the
    CLIPSeg paper, the CLIP towers are fine-tuned too: the toy CLIP saw only whole-scene captions."""
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(clipseg_config(clip.config))
    missing = model.clip.load_state_dict(clip.state_dict(), strict=False)
    assert not [k for k in missing.missing_keys if not k.endswith("position_ids")], missing
    data = batches(SegmentStream(tokenizer, batch, seed), device, workers)
    trainer = Trainer(model, device, learning_rate, weight_decay=0.01)

    def loss_of(triple):
        pixels, ids, masks = triple
        logits = trainer.module(input_ids=ids, pixel_values=pixels).logits
        return F.binary_cross_entropy_with_logits(logits.float().view_as(masks), masks)

    steps = trainer.run(data, loss_of, budget, log, checkpoint)
    return trainer.ema, steps
