"""Text-based editing in the edit-friendly DDPM noise space, optionally with Prompt-to-Prompt.

1. :meth:`DDPMEditor.invert`: the image → independent x_t draws and noise maps z_t, with the source
   prompt and source CFG (paper code: 100 steps, CFG 3.5, η = 1); or a deterministic DDIM inversion.
2. :meth:`DDPMEditor.edit`: from step ``skip``, sample with the target prompt and target CFG while
   injecting the stored z_t (paper code: skip 36, CFG 15); with ``p2p=True`` the target branch's
   attention follows the source's (released defaults: skip 12, CFG 9, cross 0.6, self 0.2).
Calling the editor does both. The algorithms are :mod:`regionedit.methods.ddpm_edit` and
:mod:`regionedit.methods.p2p`; noise-map manipulations (shift, tint) are functions of the former.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from regionedit.core.inversion import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_ETA,
    DEFAULT_SOURCE_GUIDANCE,
    DEFAULT_STEPS,
    DDPMInversion,
    ddim_invert,
    invert,
)
from regionedit.editors.base import Editor, EditorOutput, seed_from
from regionedit.errors import RegionEditError
from regionedit.methods import ddpm_edit
from regionedit.methods import p2p as prompt_to_prompt

INVERSION_TYPES = ("ddpm", "ddim")


class DDPMEditor(Editor):
    """Edit-friendly DDPM inversion and editing (Huberman-Spiegelglas et al., CVPR 2024)."""

    task = "ddpm"
    method = "DDPM editing"

    def __call__(
        self,
        image,
        *,
        source_prompt: str | None = None,
        prompt: str | None = None,
        source_guidance_scale: float = DEFAULT_SOURCE_GUIDANCE,
        guidance_scale: float | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        skip: int | None = None,
        eta: float = DEFAULT_ETA,
        inversion_type: str = "ddpm",
        generator: torch.Generator | int | None = None,
        max_side: int | None = None,
        p2p: bool = False,
        **p2p_options,
    ) -> EditorOutput:
        """Invert ``image`` with ``source_prompt`` and edit it toward ``prompt`` (text models; None
        for unconditional ones). ``p2p_options``: those of :meth:`edit`."""
        inversion = self.invert(image, prompt=source_prompt, guidance_scale=source_guidance_scale,
                                num_inference_steps=num_inference_steps, eta=eta, inversion_type=inversion_type,
                                generator=generator, max_side=max_side, record_attention=p2p)
        return self.edit(inversion, prompt=prompt, guidance_scale=guidance_scale, skip=skip, p2p=p2p, image=image,
                         **p2p_options)

    def invert(
        self,
        image,
        *,
        prompt: str | None = None,
        guidance_scale: float = DEFAULT_SOURCE_GUIDANCE,
        num_inference_steps: int = DEFAULT_STEPS,
        eta: float = DEFAULT_ETA,
        inversion_type: str = "ddpm",
        generator: torch.Generator | int | None = None,
        max_side: int | None = None,
        batched: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        record_attention: bool = False,
    ) -> DDPMInversion:
        """The image's noise maps (``"ddpm"``: edit-friendly; ``"ddim"``: deterministic, η = 0).
        ``batched``: many timesteps per UNet call (the same maps as the paper's step-by-step loop).
        ``record_attention`` (edit-friendly, text models): keep the source prompt's attention maps, so
        that a Prompt-to-Prompt edit need not compute them again (ignored for DDIM)."""
        options = dict(prompt=prompt, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                       max_side=self.max_side(max_side), progress=self.progress)
        if inversion_type == "ddim":
            return ddim_invert(self.model, image, **options)
        if inversion_type != "ddpm":
            raise RegionEditError(f"inversion_type must be one of {', '.join(INVERSION_TYPES)}, got {inversion_type!r}")
        return invert(self.model, image, eta=eta, seed=seed_from(generator), batched=batched, batch_size=batch_size,
                      record_attention=record_attention and prompt is not None, **options)

    def edit(
        self,
        inversion: DDPMInversion,
        *,
        prompt: str | None = None,
        guidance_scale: float | None = None,
        skip: int | None = None,
        p2p: bool = False,
        cross_replace: prompt_to_prompt.Window | None = None,
        self_replace: prompt_to_prompt.Window | None = None,
        reweight: Mapping[str, float] | None = None,
        blend_words: Sequence[str] = (),
        blend_threshold: float = prompt_to_prompt.DEFAULT_BLEND_THRESHOLD,
        blend_mask=None,
        image=None,
    ) -> EditorOutput:
        """Regenerate from step ``skip`` toward ``prompt`` with the inversion's noise maps.

        Defaults: target CFG 15 and skip 36 (the paper's code); with ``p2p`` CFG 9 and skip 12
        (0 on a DDIM inversion). The Prompt-to-Prompt options are :func:`regionedit.methods.p2p.edit`'s;
        ``blend_mask`` (any mask, resolved on ``image``, default the inversion's decoded input) makes
        the local blending's region."""
        self.check_inversion(inversion)
        p2p_given = [name for name, value in (("cross_replace", cross_replace), ("self_replace", self_replace),
                                              ("reweight", reweight), ("blend_words", blend_words),
                                              ("blend_mask", blend_mask)) if _given(value)]
        if p2p_given and not p2p:
            raise RegionEditError(f"{', '.join(p2p_given)}: only with p2p=True")
        if not p2p:
            out = ddpm_edit.edit(self.model, inversion, prompt, guidance_scale=_default(
                guidance_scale, ddpm_edit.DEFAULT_TARGET_GUIDANCE), skip=_default(skip, ddpm_edit.DEFAULT_SKIP),
                progress=self.progress)
            return EditorOutput(out.image, out.pixels, out.recipe, details=out)
        out = prompt_to_prompt.edit(self.model, inversion, prompt, guidance_scale=_default(guidance_scale, prompt_to_prompt.DEFAULT_TARGET_GUIDANCE),
                       skip=skip, cross_replace=cross_replace, self_replace=self_replace, reweight=reweight,
                       blend_words=blend_words, blend_threshold=blend_threshold,
                       blend_mask=self.mask_source(blend_mask, inversion.seed or 0), image=image, progress=self.progress)
        masks = {"blend": out.blend_mask} if out.blend_mask is not None else {}
        return EditorOutput(out.image, out.pixels, out.recipe, masks, {"source": out.source_image}, out)

    def reconstruct(self, inversion: DDPMInversion) -> EditorOutput:
        """The full reverse process with the source prompt and CFG: the input again (exactly, for an
        edit-friendly inversion)."""
        self.check_inversion(inversion)
        out = ddpm_edit.reconstruct(self.model, inversion, progress=self.progress)
        return EditorOutput(out.image, out.pixels, out.recipe, details=out)

    def redraws(self, inversion: DDPMInversion, num_samples: int) -> list[DDPMInversion]:
        """``inversion`` and ``num_samples - 1`` other draws of its noisy path (seeds seed+1, …): each
        reconstructs the same image and edits it differently (the paper's diversity)."""
        self.check_inversion(inversion)
        return ddpm_edit.redraws(self.model, inversion, num_samples)

    def check_inversion(self, inversion: DDPMInversion) -> None:
        """Noise maps belong to the model that made them."""
        if inversion.model != self.model.name:
            raise RegionEditError(f"this inversion was made with model {inversion.model!r}, not {self.model.name!r}: "
                                  "invert the image with this editor's model")


def _given(value) -> bool:
    """Whether an option was set: not None and not an empty collection (a mask tensor counts as set)."""
    if value is None:
        return False
    return isinstance(value, torch.Tensor) or not hasattr(value, "__len__") or len(value) > 0


def _default(value, default):
    return default if value is None else value
