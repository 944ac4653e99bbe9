"""The UNet's h-space: its bottleneck (the mid-block output), split out of the forward pass.

``encode(x_t, t)`` runs the time embedding, the down blocks and the mid block and returns h with
everything the decoder needs (skip features, time embedding, text states); ``decode(h, state)``
runs only the up blocks and the output head. ``decode(encode(x).h, state)`` equals the UNet's own
forward within float error (tested), so Jacobians with respect to h re-run only the decoder.

Supported: diffusers ``UNet2DModel`` (pixel DDPMs) and ``UNet2DConditionModel`` (Stable Diffusion
1.x/2.x, InstructPix2Pix) without class labels, ControlNet/adapter residuals or added embeddings.
The split mirrors diffusers 0.42's ``forward``; a test compares the two on every supported class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor

from regionedit.errors import RegionEditError


@dataclass
class EncoderState:
    """What the decoder needs besides h. Tensors have the batch of the encoded x_t."""

    h: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    temb: torch.Tensor
    text: torch.Tensor | None = None
    upsample_sizes: bool = False  # sizes not divisible by the UNet's factor need explicit upsample sizes

    def repeat(self, times: int) -> EncoderState:
        """The same state for a batch ``times`` larger (each item repeated in place)."""
        rep = lambda t: t.repeat_interleave(times, dim=0) if t is not None else None  # noqa: E731
        return replace(self, h=rep(self.h), skips=tuple(rep(s) for s in self.skips), temb=rep(self.temb), text=rep(self.text))


def _check_supported(unet) -> None:
    if isinstance(unet, UNet2DModel):
        config = unet.config
        if config.class_embed_type is not None or config.num_class_embeds is not None:
            raise RegionEditError("h-space split: class-conditional UNet2DModel is not supported")
        if config.time_embedding_type == "fourier" or any("Skip" in b for b in config.down_block_types):
            raise RegionEditError("h-space split: score-SDE style UNet2DModel (fourier/skip blocks) is not supported")
    elif isinstance(unet, UNet2DConditionModel):
        config = unet.config
        if config.class_embed_type is not None or config.addition_embed_type is not None:
            raise RegionEditError("h-space split: UNets with class or added embeddings (e.g. SDXL) are not supported")
    else:
        raise RegionEditError(f"h-space split: unsupported UNet class {type(unet).__name__}")
    if unet.mid_block is None:
        raise RegionEditError("h-space split: this UNet has no mid block, so no h-space")


def encode(unet, x_t: torch.Tensor, t: torch.Tensor | int, text: torch.Tensor | None = None) -> EncoderState:
    """Down path of the UNet: x_t (B×C×H×W, model dtype) → h and the decoder's inputs."""
    _check_supported(unet)
    t = torch.as_tensor(t, device=x_t.device)
    t = (t.view(1) if t.dim() == 0 else t).expand(x_t.shape[0])
    if isinstance(unet, UNet2DModel):
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=unet.dtype))
        sample = unet.conv_in(x_t)
        skips = (sample,)
        for block in unet.down_blocks:
            sample, res = block(hidden_states=sample, temb=emb)
            skips += res
        return EncoderState(unet.mid_block(sample, emb), skips, emb)
    factor = 2**unet.num_upsamplers
    emb = unet.time_embedding(unet.get_time_embed(sample=x_t, timestep=t), None)
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    text = unet.process_encoder_hidden_states(encoder_hidden_states=text, added_cond_kwargs=None)
    sample = unet.conv_in(x_t)
    skips = (sample,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=text)
        else:
            sample, res = block(hidden_states=sample, temb=emb)
        skips += res
    if getattr(unet.mid_block, "has_cross_attention", False):
        h = unet.mid_block(sample, emb, encoder_hidden_states=text)
    else:
        h = unet.mid_block(sample, emb)
    uneven = any(d % factor for d in x_t.shape[-2:])
    return EncoderState(h, skips, emb, text, uneven)


def decode(unet, h: torch.Tensor, state: EncoderState) -> torch.Tensor:
    """Up path: h → the UNet's raw output (ε, v or x0 per its prediction type)."""
    sample, skips, emb = h, state.skips, state.temb
    if isinstance(unet, UNet2DModel):
        for block in unet.up_blocks:
            res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            sample = block(sample, res, emb)
        return unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))
    for i, block in enumerate(unet.up_blocks):
        res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
        size = skips[-1].shape[2:] if state.upsample_sizes and i < len(unet.up_blocks) - 1 else None
        if getattr(block, "has_cross_attention", False):
            sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                           encoder_hidden_states=state.text, upsample_size=size)
        else:
            sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res, upsample_size=size)
    if unet.conv_norm_out:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    return unet.conv_out(sample)


@contextlib.contextmanager
def autodiff_safe(unet) -> Iterator[None]:
    """Make forward-mode AD and double backward work through the UNet, for this block only.

    Fused SDPA attention has no forward-AD formula: every ``Attention`` gets the classic processor.
    On torch 2.13, forward AD through GroupNorm also needs contiguous inputs: a pre-hook makes them
    so. Processors and hooks are restored on exit, even after an error.
    """
    attentions = [m for m in unet.modules() if isinstance(m, Attention)]
    saved = [m.processor for m in attentions]
    hooks = [m.register_forward_pre_hook(lambda _m, args: tuple(a.contiguous() if torch.is_tensor(a) else a for a in args))
             for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    try:
        for module in attentions:
            module.set_processor(AttnProcessor())
        yield
    finally:
        for module, processor in zip(attentions, saved, strict=True):
            module.set_processor(processor)
        for hook in hooks:
            hook.remove()
