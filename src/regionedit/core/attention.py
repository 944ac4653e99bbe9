"""Cross-attention capture while sampling: maps averaged over heads and steps on the fly.

:class:`CrossAttentionRecorder` wraps the processors of selected cross-attention layers. At each
call it computes the attention probabilities of one branch of the guidance batch (for an instruct
model's ``[text, image, uncond]`` layout, the text branch), averages them over heads and adds
them to a running sum per layer — no per-step storage — then lets the original processor compute
the layer's output. Processors are restored on exit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from regionedit.errors import RegionEditError


def cross_attention_layers(unet) -> dict[str, Attention]:
    """The cross-attention modules of a UNet (``attn2`` of each transformer block), by name."""
    return {name: m for name, m in unet.named_modules()
            if isinstance(m, Attention) and getattr(m, "is_cross_attention", False)}


@dataclass
class _Running:
    total: torch.Tensor | None = None
    calls: int = 0
    tokens: int = 0


class _CapturingProcessor:
    def __init__(self, original, running: _Running, branch: int, branches: int):
        self.original, self.running, self.branch, self.branches = original, running, branch, branches

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None and hidden_states.ndim == 3:
            self._record(attn, hidden_states, encoder_hidden_states)
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    @torch.no_grad()
    def _record(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        batch = hidden_states.shape[0] // self.branches
        rows = slice(self.branch * batch, (self.branch + 1) * batch)
        states, context = hidden_states[rows], encoder_hidden_states[rows]
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        probs = attn.get_attention_scores(query, key, None).float()  # (batch·heads, HW, L)
        probs = probs.view(batch, attn.heads, *probs.shape[1:]).mean(dim=1)  # heads averaged
        running = self.running
        running.total = probs if running.total is None else running.total + probs
        running.calls += 1
        running.tokens = probs.shape[-1]


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
    _running: dict[str, _Running] = field(default_factory=dict)
    _saved: dict[str, object] = field(default_factory=dict)

    def __enter__(self) -> CrossAttentionRecorder:
        modules = cross_attention_layers(self.unet)
        unknown = [name for name in self.layers if name not in modules]
        if unknown:
            raise RegionEditError(f"not cross-attention layers of this UNet: {unknown}")
        for name in self.layers:
            module = modules[name]
            self._saved[name] = module.processor
            self._running[name] = _Running()
            module.set_processor(_CapturingProcessor(module.processor, self._running[name], self.branch, self.branches))
        return self

    def __exit__(self, *exc) -> None:
        modules = cross_attention_layers(self.unet)
        for name, processor in self._saved.items():
            modules[name].set_processor(processor)

    def maps(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Mean attention maps B×L×h×w over the recorded steps and layers, resized to ``size``
        (default: the largest recorded resolution)."""
        per_layer = []
        for running in self._running.values():
            if running.calls == 0:
                continue
            mean = running.total / running.calls  # (B, HW, L)
            h, w = layer_size(self.latent_size, mean.shape[1])
            per_layer.append(mean.transpose(1, 2).reshape(mean.shape[0], -1, h, w))
        if not per_layer:
            raise RegionEditError("no cross-attention was recorded (did the sampler run inside the recorder?)")
        size = size or max((m.shape[-2:] for m in per_layer), key=lambda s: s[0] * s[1])
        return torch.stack([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in per_layer]).mean(0)


def layer_size(latent_size: tuple[int, int], tokens: int) -> tuple[int, int]:
    """Spatial size of a layer from its token count (the UNet halves both sides per level)."""
    h, w = latent_size
    factor = round(math.sqrt(h * w / tokens))
    if factor < 1 or (h // factor) * (w // factor) != tokens:
        factor = 1
        while factor <= max(h, w) and -(-h // factor) * -(-w // factor) != tokens:
            factor *= 2
    return -(-h // factor), -(-w // factor)


def layers_at_resolution(unet, latent_size: tuple[int, int], image_size: tuple[int, int], fraction: float = 1 / 32) -> list[str]:
    """The cross-attention layers whose maps are ``fraction`` of the image size (ZONE: 1/32);
    where the UNet has none at that size, the coarsest ones it has."""
    levels = len(unet.down_blocks)
    resolutions = {name: max(1, latent_size[0] // 2 ** _level(name, levels)) for name in cross_attention_layers(unet)}
    if not resolutions:
        raise RegionEditError("this UNet has no cross-attention layers")
    target = max(1, round(image_size[0] * fraction))
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
