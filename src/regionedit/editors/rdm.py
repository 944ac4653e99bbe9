"""RDM: replace what a positioning text names (or a mask covers) by a target text.

1. Locate: a text-prompted segmenter (CLIPSeg) scores the positioning text, threshold K (paper
   150) → the edit mask; or a given mask (any source).
2. Sample toward the target text with CFG (code: 5), the background replaced by the noised input
   at every step, CLIP guidance inside the mask (code: scale 150, 16 cutouts) and the
   background-preserving loss outside (code: MSE 10000, LPIPS 1000).
3. Paste the input back outside the mask.
The editor owns the diffusion model, the segmenter and the CLIP of its family (by default the
companions of :func:`regionedit.segment.companions`, loaded on first use). The algorithm is
:mod:`regionedit.methods.rdm`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from regionedit.editors.base import Editor, EditorOutput, auto, seed_from
from regionedit.errors import RegionEditError
from regionedit.methods import rdm
from regionedit.models.backend import DiffusionModel
from regionedit.segment import DEFAULT_THRESHOLD, companions


class RDMEditor(Editor):
    """Region-aware diffusion for zero-shot text-driven editing (Huang et al., 2023).

    ``segmenter`` and ``clip``: a loaded companion, a model name, ``"auto"`` (the model family's) or
    None (none: then locating by text, or CLIP guidance, is refused in one line)."""

    task = "rdm"
    method = "RDM"

    def __init__(self, model: DiffusionModel, segmenter="auto", clip="auto", allow_pickle: bool = False):
        super().__init__(model, allow_pickle)
        default_segmenter, default_clip = companions(model.name)
        self.segmenter, self.clip = auto(segmenter, default_segmenter), auto(clip, default_clip)

    def __call__(
        self,
        image,
        prompt: str,
        *,
        locate: str | None = None,
        mask=None,
        num_inference_steps: int = rdm.DEFAULT_STEPS,
        guidance_scale: float = rdm.DEFAULT_GUIDANCE,
        threshold: float = DEFAULT_THRESHOLD,
        dilation: int = 0,
        clip_guidance_scale: float = rdm.DEFAULT_CLIP_SCALE,
        cutouts: int = rdm.DEFAULT_CUTOUTS,
        nerp_mse: float = rdm.DEFAULT_NERP_MSE,
        nerp_lpips: float = rdm.DEFAULT_NERP_LPIPS,
        blend: bool = True,
        paste_back: bool = True,
        feather: int = 0,
        eta: float = rdm.DEFAULT_ETA,
        generator: torch.Generator | int | None = None,
        max_side: int | None = None,
    ) -> EditorOutput:
        """Make the region that ``locate`` names (or ``mask`` covers; it wins) into ``prompt``.

        ``threshold``: K on 0..255 for the positioning text and ``text:`` masks. The output's
        ``masks["edit"]`` is the region at the output's size."""
        seed = seed_from(generator)
        out = rdm.edit(self.model, image, prompt, locate=locate, mask=self.mask_source(mask, seed, threshold=threshold),
                       segmenter=self.loaded_segmenter() if locate is not None and mask is None else None,
                       clip=self.loaded_clip(clip_guidance_scale), num_inference_steps=num_inference_steps,
                       guidance_scale=guidance_scale, threshold=threshold, dilation=dilation,
                       clip_guidance_scale=clip_guidance_scale, cutouts=cutouts, nerp_mse=nerp_mse, nerp_lpips=nerp_lpips,
                       blend=blend, paste_back=paste_back, feather=feather, eta=eta, seed=seed, max_side=self.max_side(max_side),
                       progress=self.progress)
        return EditorOutput(out.image, out.pixels, out.recipe, {"edit": out.mask}, details=out)

    def loaded_segmenter(self):
        """The segmenter, loaded on first use."""
        from regionedit.segment import load_segmenter

        if self.segmenter is None:
            raise RegionEditError("locating by text needs a segmenter, and this RDM editor has none: give a mask instead")
        return self.loaded(self.segmenter, load_segmenter)

    def text_segmenter(self):
        return self.loaded_segmenter()

    def loaded_clip(self, clip_guidance_scale: float):
        """The CLIP for guidance (None when the scale is 0), loaded on first use."""
        from regionedit.segment import load_clip

        if not clip_guidance_scale:
            return None
        if self.clip is None:
            raise RegionEditError(f"clip_guidance_scale is {clip_guidance_scale:g} but this RDM editor has no CLIP model: "
                                  "give one (clip=...) or set clip_guidance_scale=0")
        return self.loaded(self.clip, load_clip)

    def mask_source(self, mask, seed: int = 0, name: str = "mask", threshold: float | None = None):
        """As :meth:`Editor.mask_source`; a ``text:`` spec takes ``threshold`` (RDM's K), as the
        positioning text does."""
        from regionedit.mask_sources import TextMask

        source = super().mask_source(mask, seed, name)
        if threshold is not None and isinstance(mask, str) and isinstance(source, TextMask):
            source = replace(source, threshold=threshold)
        return source
