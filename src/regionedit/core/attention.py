"""Attention control: processors that record and/or edit attention probabilities while sampling.

One mechanism serves every method that looks inside the UNet's attention:

- an :class:`AttentionControl` says, per layer call, which batch rows' probabilities it needs
  (:meth:`~AttentionControl.rows`; None lets the layer's own processor — fused SDPA — run
  untouched) and what to do with them (:meth:`~AttentionControl.process`). An *observing* control
  (``edits = False``) only reads them: the layer's own processor still computes the output, so
  observing changes nothing. An *editing* control (``edits = True``) may return new
  probabilities for its rows: the layer then runs explicitly (q·kᵀ softmax, as diffusers'
  ``AttnProcessor`` does) with them. Fused SDPA returns no probabilities, so only the layers and
  steps a control asks for pay for the explicit computation;
- :func:`controlled_attention` installs a :class:`ControlledProcessor` on named layers of any
  UNet and restores the original processors on exit.

Users: :class:`CrossAttentionRecorder` (ZONE's capture: the maps of one branch of the guidance
batch — for an instruct model's ``[text, image, uncond]`` layout, the text branch — averaged
over heads and, with a running sum, over steps: no per-step storage), :class:`SourceAttention`
(the edit-friendly inversion keeps the source text row's maps of every step, so that
Prompt-to-Prompt need not compute them again) and Prompt-to-Prompt
(:mod:`regionedit.methods.p2p`: replace / refine / re-weight cross-attention, inject
self-attention, and record the maps that drive local blending).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from regionedit.errors import RegionEditError

Rows = slice | list[int]
SELF_MAX_TOKENS = 16**2  # P2P injects self-attention in layers with at most this many queries (16² at SD's 512²)
SOURCE_ATTENTION_BUDGET_MB = 1024  # larger records are dropped: P2P then computes the source row itself


def attention_layers(unet) -> dict[str, Attention]:
    """Every attention module of a UNet (self- and cross-attention), by name."""
    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention)}


def cross_attention_layers(unet) -> dict[str, Attention]:
    """The cross-attention modules of a UNet (``attn2`` of each transformer block), by name."""
    return {name: m for name, m in attention_layers(unet).items() if getattr(m, "is_cross_attention", False)}


def self_attention_layers(unet) -> dict[str, Attention]:
    """The self-attention modules of a UNet (``attn1`` of each transformer block, attention blocks)."""
    return {name: m for name, m in attention_layers(unet).items() if not getattr(m, "is_cross_attention", False)}


# ------------------------------------------------------------------------------- the mechanism
class AttentionControl:
    """What controlled attention layers do with their probabilities.

    Subclasses override :meth:`rows` and :meth:`process`; ``edits`` says whether they may change
    the probabilities (and so make the layer run explicitly when they ask for rows).
    """

    edits: bool = False

    def rows(self, name: str, is_cross: bool, batch: int, tokens: int) -> Rows | None:
        """Batch rows whose probabilities this call of layer ``name`` needs, or None to let the
        layer's own processor run untouched. ``tokens``: the layer's query tokens (its h·w)."""
        return None

    def process(self, name: str, probs: torch.Tensor, is_cross: bool) -> torch.Tensor | None:
        """``probs``: rows × heads × queries × keys, of the requested rows. Return probabilities of
        the same shape to replace them (editing controls), or None to leave them as they are."""
        return None


class ControlledProcessor:
    """An attention processor that shows the probabilities of some rows to an :class:`AttentionControl`."""

    def __init__(self, original, name: str, control: AttentionControl):
        self.original, self.name, self.control = original, name, control

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        shape = hidden_states.shape
        tokens = shape[1] if hidden_states.ndim == 3 else shape[2] * shape[3]
        is_cross = encoder_hidden_states is not None
        rows = self.control.rows(self.name, is_cross, shape[0], tokens)
        if rows is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if not self.control.edits:
            self._observe(attn, rows, is_cross, hidden_states, encoder_hidden_states, attention_mask, temb)
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

        def edit(probs: torch.Tensor) -> torch.Tensor:
            probs = probs.view(shape[0], attn.heads, *probs.shape[1:])
            edited = self.control.process(self.name, probs[rows], is_cross)
            if edited is not None:
                probs = probs.clone()
                probs[rows] = edited.to(probs.dtype)
            return probs.flatten(0, 1)

        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, edit)

    @torch.no_grad()
    def _observe(self, attn, rows, is_cross, hidden_states, encoder_hidden_states, attention_mask, temb) -> None:
        def pick(x):
            return None if x is None else x[rows]

        query, key, _, _ = _project(attn, pick(hidden_states), pick(encoder_hidden_states), pick(temb))
        batch = query.shape[0] // attn.heads
        mask = attn.prepare_attention_mask(pick(attention_mask), key.shape[1], batch)
        probs = attn.get_attention_scores(query, key, mask)
        self.control.process(self.name, probs.view(batch, attn.heads, *probs.shape[1:]), is_cross)


def _project(attn: Attention, hidden_states, encoder_hidden_states, temb):
    """AttnProcessor's preamble → (query, key, value) with heads folded into the batch, and the
    hidden states' shape before flattening (attention blocks of pixel UNets take B×C×H×W)."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape = hidden_states.shape
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.view(shape[0], shape[1], shape[2] * shape[3]).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
    return attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value), shape


def explicit_attention(
    attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
    edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """diffusers' ``AttnProcessor`` with a hook: ``edit`` maps the (batch·heads)×Q×K probabilities
    to the ones that weight the values."""
    residual = hidden_states
    query, key, value, shape = _project(attn, hidden_states, encoder_hidden_states, temb)
    batch = shape[0]
    mask = attn.prepare_attention_mask(attention_mask, key.shape[1], batch)
    probs = attn.get_attention_scores(query, key, mask)
    if edit is not None:
        probs = edit(probs)
    out = attn.batch_to_head_dim(torch.bmm(probs, value))
    out = attn.to_out[1](attn.to_out[0](out))
    if len(shape) == 4:
        out = out.transpose(-1, -2).reshape(shape)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


@contextmanager
def controlled_attention(unet, control: AttentionControl, layers: Iterable[str]) -> Iterator[AttentionControl]:
    """Route the named attention layers of ``unet`` through ``control`` inside a ``with`` block."""
    modules = attention_layers(unet)
    layers = list(layers)
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise RegionEditError(f"not attention layers of this UNet: {unknown}")
    saved = install(modules, control, layers)
    try:
        yield control
    finally:
        restore(modules, saved)


def install(modules: dict[str, Attention], control: AttentionControl, layers: list[str]) -> dict[str, object]:
    """Put a :class:`ControlledProcessor` on each named module; returns the processors it replaced."""
    saved = {}
    for name in layers:
        saved[name] = modules[name].processor
        modules[name].set_processor(ControlledProcessor(saved[name], name, control))
    return saved


def restore(modules: dict[str, Attention], saved: dict[str, object]) -> None:
    for name, processor in saved.items():
        modules[name].set_processor(processor)


# ------------------------------------------------------------------------------- ZONE's capture
@dataclass
class RunningMaps:
    """A running sum of head-averaged attention maps (rows × queries × keys) and its count."""

    total: torch.Tensor | None = None
    calls: int = 0
    tokens: int = 0

    def add(self, probs: torch.Tensor) -> None:
        """Add rows × heads × Q × K probabilities, averaged over heads (kept in float32)."""
        mean = probs.float().mean(dim=1)
        self.total = mean if self.total is None else self.total + mean
        self.calls += 1
        self.tokens = mean.shape[-1]


class _Recording(AttentionControl):
    def __init__(self, running: dict[str, RunningMaps], branch: int, branches: int):
        self.running, self.branch, self.branches = running, branch, branches

    def rows(self, name, is_cross, batch, tokens):
        if not is_cross:
            return None
        size = batch // self.branches
        return slice(self.branch * size, (self.branch + 1) * size)

    def process(self, name, probs, is_cross):
        self.running[name].add(probs)


@dataclass
class CrossAttentionRecorder:
    """Record the mean cross-attention maps of ``layers`` of ``unet`` inside a ``with`` block.

    ``branch`` / ``branches``: which slice of the guidance batch to record (instruct models: 0 of 3).
    ``latent_size``: (h, w) of the sample, to recover each layer's spatial size.
    """

    unet: torch.nn.Module
    layers: list[str]
    latent_size: tuple[int, int]
    branch: int = 0
    branches: int = 1
    _running: dict[str, RunningMaps] = field(default_factory=dict)
    _saved: dict[str, object] = field(default_factory=dict)

    def __enter__(self) -> CrossAttentionRecorder:
        modules = cross_attention_layers(self.unet)
        unknown = [name for name in self.layers if name not in modules]
        if unknown:
            raise RegionEditError(f"not cross-attention layers of this UNet: {unknown}")
        self._running = {name: RunningMaps() for name in self.layers}
        self._saved = install(modules, _Recording(self._running, self.branch, self.branches), list(self.layers))
        return self

    def __exit__(self, *exc) -> None:
        restore(cross_attention_layers(self.unet), self._saved)

    def maps(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Mean attention maps B×L×h×w over the recorded steps and layers, resized to ``size``
        (default: the largest recorded resolution)."""
        per_layer = [running.total / running.calls for running in self._running.values() if running.calls]
        if not per_layer:
            raise RegionEditError("no cross-attention was recorded (did the sampler run inside the recorder?)")
        return mean_maps(per_layer, self.latent_size, size)


def mean_maps(per_layer: list[torch.Tensor], latent_size: tuple[int, int], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Layers' head-averaged maps (each B×HW×L) → their mean B×L×h×w, each resized to ``size``
    (default: the largest of their resolutions)."""
    spatial = []
    for mean in per_layer:
        h, w = layer_size(latent_size, mean.shape[1])
        spatial.append(mean.transpose(1, 2).reshape(mean.shape[0], -1, h, w))
    size = size or max((m.shape[-2:] for m in spatial), key=lambda s: s[0] * s[1])
    return torch.stack([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in spatial]).mean(0)


def layer_size(latent_size: tuple[int, int], tokens: int) -> tuple[int, int]:
    """Spatial size of a layer from its token count (the UNet halves both sides per level)."""
    h, w = latent_size
    factor = round(math.sqrt(h * w / tokens))
    if factor < 1 or (h // factor) * (w // factor) != tokens:
        factor = 1
        while factor <= max(h, w) and -(-h // factor) * -(-w // factor) != tokens:
            factor *= 2
    return -(-h // factor), -(-w // factor)


def layers_at_resolution(unet, latent_size: tuple[int, int], image_size: tuple[int, int], fraction: float = 1 / 32,
                         min_cells: int = 1) -> list[str]:
    """The cross-attention layers whose maps are ``fraction`` of the image size (ZONE: 1/32), or
    ``min_cells`` wide if that is more; where the UNet has none at that size, the coarsest ones it has."""
    levels = len(unet.down_blocks)
    resolutions = {name: max(1, latent_size[0] // 2 ** _level(name, levels)) for name in cross_attention_layers(unet)}
    if not resolutions:
        raise RegionEditError("this UNet has no cross-attention layers")
    target = max(1, min_cells, round(image_size[0] * fraction))
    chosen = [n for n, r in resolutions.items() if r == target]
    if not chosen:
        coarsest = min(resolutions.values())
        chosen = [n for n, r in resolutions.items() if r == coarsest]
    return chosen


def _level(name: str, levels: int) -> int:
    """Down-sampling level of a layer from its diffusers name (down_blocks.i, mid_block, up_blocks.j)."""
    parts = name.split(".")
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "up_blocks":
        return levels - 1 - int(parts[1])
    return levels - 1  # mid block


# ------------------------------------------------------------------------------- the inversion's maps
@dataclass
class SourceAttention:
    """The source text row's attention probabilities (heads × queries × keys) at each step of an
    inversion: every cross-attention layer and the self-attention layers with ≤ ``self_max_tokens``
    queries. The edit-friendly inversion evaluates the UNet at exactly the x_t, timesteps and
    source prompt that Prompt-to-Prompt's source row would (the stored source branch *is* the
    input's path), so these are the maps that row would compute, up to float rounding."""

    maps: dict[tuple[int, str], torch.Tensor]
    self_max_tokens: int
    steps: int

    def get(self, step: int, name: str) -> torch.Tensor:
        return self.maps[(step, name)]

    def covers(self, steps: Iterable[int], layers: Iterable[str]) -> bool:
        layers = list(layers)
        return all((step, name) in self.maps for step in steps for name in layers)

    @property
    def megabytes(self) -> float:
        return sum(t.numel() * t.element_size() for t in self.maps.values()) / 2**20


class SourceAttentionRecorder(AttentionControl):
    """Observes the text rows (the last ``len(steps)`` of each UNet batch: the guidance batch is
    ``[uncond…, text…]``) and keeps their maps by step, until ``budget_mb`` is exceeded — then it
    drops them all and stops observing (the caller falls back to computing them)."""

    def __init__(self, steps: int, self_max_tokens: int = SELF_MAX_TOKENS, budget_mb: float | None = None):
        budget_mb = SOURCE_ATTENTION_BUDGET_MB if budget_mb is None else budget_mb
        self.self_max_tokens, self.budget, self.total_steps = self_max_tokens, budget_mb * 2**20, steps
        self.maps: dict[tuple[int, str], torch.Tensor] = {}
        self.steps: list[int] = []  # the schedule steps of the current UNet call's text rows, in order
        self.bytes, self.overflowed = 0, False

    def rows(self, name, is_cross, batch, tokens):
        if self.overflowed or not self.steps or (not is_cross and tokens > self.self_max_tokens):
            return None
        return slice(batch - len(self.steps), batch)

    def process(self, name, probs, is_cross):
        for row, step in enumerate(self.steps):
            kept = probs[row].clone()
            self.maps[(step, name)] = kept
            self.bytes += kept.numel() * kept.element_size()
        if self.bytes > self.budget:
            self.maps, self.overflowed = {}, True

    def result(self) -> SourceAttention | None:
        return None if self.overflowed else SourceAttention(self.maps, self.self_max_tokens, self.total_steps)


@contextmanager
def recording_source_attention(unet, steps: int, enabled: bool = True) -> Iterator[SourceAttentionRecorder | None]:
    """Inside the block, every attention layer of ``unet`` reports to a :class:`SourceAttentionRecorder`
    (None when not ``enabled``); set its ``steps`` before each UNet call."""
    if not enabled:
        yield None
        return
    recorder = SourceAttentionRecorder(steps)
    with controlled_attention(unet, recorder, attention_layers(unet)):
        yield recorder
