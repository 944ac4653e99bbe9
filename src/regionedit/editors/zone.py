"""ZONE: apply an instruction locally, with two fused instruct models.

1. Action (change / add / remove) from the instruction: the action classifier, or keywords.
2. Both instruct models denoise one latent (20 steps, text CFG 7.5, image CFG 1.5), fused after
   every step with β (0.2 for remove, 0.01 else); the first model's cross-attention is recorded.
3. Coarse mask from the attention (threshold T = 128; for the toy models, where the edit changed
   the input), or a given mask; the segment of best
   Region-IoU in the edited image (the input for remove); FFT edge smoother → the final mask.
4. The edited layer over the input: outside the final mask the output is the input, exactly.
The editor owns both instruct models (the second by default the family's partner:
MagicBrush for hub models, :func:`regionedit.methods.zone.partner_of`), the classifier and the
segment-everything provider. The algorithm is :mod:`regionedit.methods.zone`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from regionedit.editors.base import Editor, EditorOutput, auto, seed_from
from regionedit.errors import RegionEditError
from regionedit.methods import zone
from regionedit.methods.actions import ActionClassifier, shipped_classifier
from regionedit.models.backend import DiffusionModel
from regionedit.models.loading import local_folder


class ZoneEditor(Editor):
    """Zero-shot instruction-guided local editing (Li et al., CVPR 2024).

    ``second_model``: the instruct model fused with the first — a loaded model, a name, ``"auto"``
    (the family's partner, where this installation has it) or None (the first model alone).
    ``classifier``: an :class:`~regionedit.methods.actions.ActionClassifier`, its file, ``"auto"``
    (the classifier the model's folder ships, if any) or None (keywords decide). ``segmenter``: a
    segment-everything provider or its spec (``"classical"``, ``"sam:<model>"``)."""

    task = "zone"
    method = "ZONE"

    def __init__(self, model: DiffusionModel, second_model="auto", classifier="auto", segmenter="classical",
                 allow_pickle: bool = False):
        from regionedit.segment_everything import load_segment_everything

        super().__init__(model, allow_pickle)
        second = auto(second_model, zone.partner_of(model.name))
        self.second_model = self.companion_model(second) if isinstance(second, str) else second
        classifier = auto(classifier, "shipped")
        if classifier == "shipped":
            self.classifier = shipped_classifier(local_folder(model.name), model.name)
        else:
            self.classifier = ActionClassifier.load(classifier) if isinstance(classifier, str | Path) else classifier
        self.segmenter = self.loaded(segmenter, load_segment_everything)

    def __call__(
        self,
        image,
        prompt: str,
        *,
        mask=None,
        num_inference_steps: int = zone.DEFAULT_STEPS,
        guidance_scale: float = zone.DEFAULT_TEXT_GUIDANCE,
        image_guidance_scale: float = zone.DEFAULT_IMAGE_GUIDANCE,
        beta: float | None = None,
        threshold: float = zone.DEFAULT_THRESHOLD,
        localisation: str | None = None,
        change_threshold: float = zone.DEFAULT_CHANGE_THRESHOLD,
        attention_layers: list[str] | None = None,
        attention_fraction: float | None = None,
        union_above: float | None = None,
        dilation: int | None = None,
        d0: float | None = None,
        smoother_threshold: float = zone.DEFAULT_SMOOTHER_THRESHOLD,
        keep_segment: bool | None = None,
        keep_segment_limit: float | None = zone.DEFAULT_KEEP_SEGMENT_LIMIT,
        eta: float = zone.DEFAULT_ETA,
        generator: torch.Generator | int | None = None,
        max_side: int | None = None,
    ) -> EditorOutput:
        """Apply the instruction ``prompt`` (e.g. "make the ball blue") locally.

        ``mask``: a region replacing the attention localisation (any mask source). ``localisation``:
        ``"attention"`` (the paper) or ``"change"`` (where the edit changed the image by more than
        ``change_threshold``); default by model family (:func:`regionedit.methods.zone.localisation_for`).
        ``beta``: the fusion weight (default by action); ``union_above``: take every segment with Region-IoU ≥ this
        instead of the best one; ``dilation``, ``d0``: the edge smoother's (default: scaled from 512²);
        ``keep_segment``: the final mask also keeps the whole refined segment (default by model family),
        if its area is at most ``keep_segment_limit`` times the smoothed change's (None: always).
        ``masks``: ``coarse``, ``refined`` and ``final``; ``images``: ``edited`` (the instruct models'
        output) and ``layer`` (RGBA, alpha = the final mask)."""
        settings = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        image_guidance_scale=image_guidance_scale, beta=beta, threshold=threshold,
                        localisation=localisation, change_threshold=change_threshold,
                        attention_layers=attention_layers, attention_fraction=attention_fraction,
                        union_above=union_above, dilation=dilation, d0=d0, smoother_threshold=smoother_threshold,
                        keep_segment=keep_segment, keep_segment_limit=keep_segment_limit, eta=eta,
                        max_side=max_side)
        return self.edit_many([image], [prompt], masks=[mask], generators=[generator], **settings)[0]

    def edit_many(self, images: Sequence, prompts: Sequence[str], *, masks: Sequence | None = None,
                  generators: Sequence | None = None, max_side: int | None = None, **settings) -> list[EditorOutput]:
        """Several images of one size in one batched sampling run; each image's result is the one it
        gets alone (its noise comes from its own seed). ``settings``: those of :meth:`__call__`."""
        for name, values in (("mask", masks), ("generator", generators)):
            if values is not None and len(values) != len(images):
                raise RegionEditError(f"ZONE needs one {name} (or None) per image: {len(images)} images, {len(values)} {name}s")
        seeds = [seed_from(g) for g in generators or [None] * len(images)]
        masks = [self.mask_source(m, seed) for m, seed in zip(masks or [None] * len(images), seeds, strict=True)]
        outputs = zone.edit_many(self.model, list(images), list(prompts), second_model=self.second_model,
                                 classifier=self.classifier, segmenter=self.segmenter, seeds=seeds,
                                 max_side=self.max_side(max_side), masks=None if all(m is None for m in masks) else masks,
                                 progress=self.progress, **settings)
        return [EditorOutput(out.image, out.pixels, out.recipe,
                             {"coarse": out.coarse_mask, "refined": out.refined_mask, "final": out.final_mask},
                             {"edited": out.edited, "layer": out.layer}, out) for out in outputs]
