"""Training the toy-world models: a step or time budget, one trainer (AdamW, warm-up, clipping,
EMA), the diffusion loss, and the training runs of the pixel DDPM, the toy CLIP and CLIPSeg.

Each run seeds torch, reads its stream's batches (through a refreshing :class:`Pool` when
:class:`Speed` asks for one), steps the trainer within the budget and returns the EMA weights.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPSegForImageSegmentation

from regionedit.toyworld.architectures import clip_config, clipseg_config, schedule, toy_tokenizer
from regionedit.toyworld.streams import (
    ClipStream,
    DiffusionBatch,
    Pool,
    SegmentStream,
    Stream,
    batches,
)


@dataclass
class Budget:
    """Train for ``steps``, or until ``seconds`` of wall-clock time have passed, whichever comes first
    (the card records the steps actually run, so ``--steps`` reproduces a timed run). A run fills in
    ``stopped_by``: "steps", "time budget" or "signal"."""

    steps: int
    seconds: float | None = None
    stopped_by: str | None = None


class GracefulStop:
    """While active, SIGTERM or SIGINT asks the run to stop after its current step, so that it ends
    as a finished run does (weights and card written; ``--resume`` continues); a second signal
    interrupts at once. Outside the main thread, signals are left alone."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


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
        budget.stopped_by = "steps"
        with GracefulStop() as stop:
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
                if stop.requested or (budget.seconds is not None and now - began > budget.seconds):
                    budget.stopped_by = "signal" if stop.requested else "time budget"
                    if log:
                        log(f"{budget.stopped_by}: stopping after {self.step_count} steps ({now - began:.0f} s)")
                    break
        return self.step_count


def forward_noise(x0: torch.Tensor, alphas: torch.Tensor):
    """q(x_t | x_0) at a uniformly drawn timestep: (t, ᾱ_t shaped for broadcasting, ε, x_t)."""
    noise = torch.randn_like(x0)
    t = torch.randint(0, len(alphas), (len(x0),), device=x0.device)
    a = alphas[t].view(-1, 1, 1, 1)
    return t, a, noise, a.sqrt() * x0 + (1 - a).sqrt() * noise


def diffusion_loss(unet, alphas: torch.Tensor):
    """ε-prediction MSE at a uniformly drawn timestep."""

    def loss_of(batch: DiffusionBatch) -> torch.Tensor:
        t, _, noise, x_t = forward_noise(batch.x0, alphas)
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
                  device="cpu", workers: int = 0, log=None, checkpoint=None, seed: int = 0,
                  start: CLIPSegForImageSegmentation | None = None, dice_weight: float = 0.0,
                  absent_weight: float = 0.0, tune_text: bool = False, tune_vision: bool = False,
                  phrases_per_scene: int = 1, kind_weight: float = 0.0, bare_share: float | None = None,
                  absent_bare_share: float | None = None, kind_pretraining: bool = False):
    """CLIPSeg on the toy CLIP's towers, trained on (scene, object phrase) → visible mask; both towers
    frozen, as in the CLIPSeg paper (transformers' CLIPSeg runs them under ``no_grad``).
    ``tune_text``: fine-tune the text tower too (the toy CLIP saw only whole-scene captions, and its
    frozen embeddings of "a red ball" and "a red box" have cosine 0.96). ``tune_vision``: fine-tune
    the vision tower too (a linear probe on the toy CLIP's patch features reads an object's colour
    at 0.95 but its kind at 0.41, chance 0.21; yet at equal steps tuning it gave no gain over the frozen
    tower: bench/results/clipseg-ablation-vision-tower-cpu.json).
    Either way the forward runs through :func:`clipseg_logits`, which computes what transformers'
    forward does, with gradients into the towers that are tuned.
    ``start``: a CLIPSeg to continue (``--resume``). ``dice_weight``: a soft Dice term added to the
    paper's binary cross-entropy (the toy objects cover 2–4 % of a scene, so BCE alone leaves the
    scores inside them low). ``absent_weight``: a hard-negative term, the BCE of each empty mask's
    highest logit against 0 (a mask must stay empty to the last pixel for a phrase naming an absent
    object, while the per-pixel BCE forgives a few bright pixels). ``phrases_per_scene`` K: the
    ``batch`` examples of a step name batch / K scenes K times each, so the vision tower (the step's
    main cost) runs on batch / K images (:class:`SegmentStream`). ``kind_weight`` (with
    ``tune_vision``): a dense auxiliary task for the vision tower, the cross-entropy of a linear head
    that reads from each patch token of its last layer the share of each object kind (or none) in
    that patch (:class:`KindHead`; a web-scale CLIP knows its objects' kinds, the toy one barely does).
    The head is trained beside CLIPSeg and not saved (a resumed run starts a new one). ``bare_share``:
    how often a present object is named by its bare kind, ``absent_bare_share`` an absent one
    (:func:`~regionedit.toyworld.streams.object_phrases`). ``kind_pretraining``: train the vision tower
    alone on :class:`KindHead`'s dense kind task (the decoder and the text tower untouched, no phrase
    loss; 50 warm-up steps), a stage before the segmentation runs: the toy CLIP saw only whole-scene
    captions, which its colours tell apart, so its patch tokens barely know the kinds."""
    torch.manual_seed(seed)
    model = start
    if model is None:
        model = CLIPSegForImageSegmentation(clipseg_config(clip.config))
        missing = model.clip.load_state_dict(clip.state_dict(), strict=False)
        assert not [k for k in missing.missing_keys if not k.endswith("position_ids")], missing
    if kind_weight and not tune_vision:
        raise ValueError("kind_weight trains the vision tower: use it with tune_vision")
    data = batches(SegmentStream(tokenizer, batch, seed, phrases_per_scene, bare_share, absent_bare_share), device, workers)
    if kind_pretraining:
        return _pretrain_kinds(model, data, budget, learning_rate, device, log, checkpoint)
    trainer = Trainer(KindHead(model) if kind_weight else model, device, learning_rate, weight_decay=0.01)
    segmenter = (lambda module: module.segmenter) if kind_weight else (lambda module: module)

    def loss_of(quadruple):
        pixels, ids, masks, kinds = quadruple
        hidden = clipseg_vision(segmenter(trainer.module), pixels, tune_vision)
        logits = clipseg_logits(segmenter(trainer.module), pixels, ids, tune_text, hidden=hidden).float().view_as(masks)
        loss = F.binary_cross_entropy_with_logits(logits, masks)
        if dice_weight:
            loss = loss + dice_weight * soft_dice_loss(logits, masks)
        if absent_weight:
            loss = loss + absent_weight * empty_mask_peak_loss(logits, masks)
        if kind_weight:
            loss = loss + kind_weight * trainer.module.loss(hidden[-1], kinds)
        return loss

    save = checkpoint and (lambda ema, steps: checkpoint(segmenter(ema), steps))
    steps = trainer.run(data, loss_of, budget, log, save)
    return segmenter(trainer.ema), steps


def _pretrain_kinds(model: CLIPSegForImageSegmentation, data: Iterator, budget: Budget, learning_rate: float,
                    device, log, checkpoint) -> tuple[CLIPSegForImageSegmentation, int]:
    """The vision tower (and a fresh :class:`KindHead`) trained on the kind task alone."""
    head = KindHead(model)
    head.requires_grad_(False)
    for module in (head.head, model.clip.vision_model):
        module.requires_grad_(True)
    trainer = Trainer(head, device, learning_rate, warmup=50, weight_decay=0.01)

    def loss_of(quadruple):
        pixels, _ids, _masks, kinds = quadruple
        return trainer.module.loss(clipseg_vision(trainer.module.segmenter, pixels, tune_vision=True)[-1], kinds)

    save = checkpoint and (lambda ema, steps: checkpoint(ema.segmenter, steps))
    steps = trainer.run(data, loss_of, budget, log, save)
    return trainer.ema.segmenter.requires_grad_(True), steps


class KindHead(torch.nn.Module):
    """CLIPSeg with a linear head on its vision tower's patch tokens that reads, per patch, whether
    an object covers at least a quarter of it (a binary cross-entropy) and, on such patches, the
    kind covering most of it (a cross-entropy over ``KINDS``). An earlier soft cross-entropy over the
    share of every kind and "no object" in every patch taught the kinds little: some nine in ten
    patches hold no object, so the kind term was averaged away (at 1,277 steps of ``kind_weight`` 1, a
    linear probe read an object's kind at 0.65 vs 0.61 from the untuned tower)."""

    OBJECT_SHARE = 0.25

    def __init__(self, segmenter: CLIPSegForImageSegmentation):
        from regionedit.toyworld.scenes import KINDS

        super().__init__()
        self.segmenter = segmenter
        self.patch = segmenter.config.vision_config.patch_size
        self.head = torch.nn.Linear(segmenter.config.vision_config.hidden_size, len(KINDS) + 1)

    def loss(self, last_hidden: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """``last_hidden``: B×(1 + N)×D (class token first), ``kinds``: B×H×W kind maps (0 = no object)."""
        logits = self.head(last_hidden[:, 1:]).float()
        shares = F.avg_pool2d(F.one_hot(kinds.long(), logits.shape[-1]).permute(0, 3, 1, 2).float(), self.patch)
        shares = shares.flatten(2).transpose(1, 2)
        if shares.shape != logits.shape:
            raise ValueError(f"{logits.shape[1]} patch tokens but a {tuple(shares.shape[-2:])} grid of patches")
        on_object = 1 - shares[..., 0] >= self.OBJECT_SHARE
        objectness = F.binary_cross_entropy_with_logits(logits[..., 0], (~on_object).float())
        if not on_object.any():
            return objectness
        return objectness + F.cross_entropy(logits[..., 1:][on_object], shares[..., 1:][on_object].argmax(-1))


def clipseg_vision(model: CLIPSegForImageSegmentation, pixels: torch.Tensor, tune_vision: bool = False) -> tuple:
    """The vision tower's hidden states (embeddings, then every layer), with gradients when tuned."""
    with torch.set_grad_enabled(tune_vision and torch.is_grad_enabled()):
        return model.clip.get_image_features(pixel_values=pixels, output_hidden_states=True).hidden_states


def clipseg_logits(model: CLIPSegForImageSegmentation, pixels: torch.Tensor, ids: torch.Tensor,
                   tune_text: bool = False, tune_vision: bool = False, hidden: tuple | None = None) -> torch.Tensor:
    """CLIPSeg's logits for ``pixels`` and phrases ``ids``, computed as its own forward does (the
    conditional embedding from ``get_text_features``, the decoder on the vision tower's hidden states
    after ``extract_layers``), but with gradients into the text and/or the vision tower when told.
    With K times more phrases than images, phrases K·i … K·i + K − 1 are read on image i (the
    vision tower runs once per image). ``hidden``: the vision tower's states if already computed
    (:func:`clipseg_vision`)."""
    from regionedit.metrics import pooled

    with torch.set_grad_enabled(tune_text and torch.is_grad_enabled()):
        conditional = pooled(model.clip.get_text_features(input_ids=ids))
    hidden = hidden if hidden is not None else clipseg_vision(model, pixels, tune_vision)
    per_image = len(ids) // len(pixels)
    if per_image * len(pixels) != len(ids):
        raise ValueError(f"{len(ids)} phrases cannot be shared out evenly over {len(pixels)} images")
    activations = [hidden[i + 1].repeat_interleave(per_image, 0) for i in model.extract_layers]
    return model.decoder(activations, conditional).logits


def empty_mask_peak_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE of the highest logit of each empty B×H×W mask against 0, summed over those masks and divided
    by B (so the term's scale does not depend on how many of the batch are empty); 0 without any."""
    empty = masks.flatten(1).amax(1) == 0
    peaks = logits.flatten(1).amax(1)[empty]
    return F.binary_cross_entropy_with_logits(peaks, torch.zeros_like(peaks), reduction="sum") / masks.shape[0]


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice per B×H×W mask, averaged; an empty mask scores by how empty the prediction is."""
    probs = torch.sigmoid(logits).flatten(1)
    masks = masks.flatten(1)
    dice = (2 * (probs * masks).sum(1) + eps) / (probs.sum(1) + masks.sum(1) + eps)
    return (1 - dice).mean()
