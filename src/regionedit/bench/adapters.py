"""Editing methods adapted to the quality harness (`regionedit bench quality --method NAME`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regionedit.errors import RegionEditError
from regionedit.images import pil_to_tensor
from regionedit.methods import rdm
from regionedit.models import load_model
from regionedit.segment import load_clip, load_segmenter
from regionedit.toyworld.benchmark import BenchItem, MethodOutput


class RDMMethod:
    """RDM on scenes: locate the instruction's source object, replace it by the target text."""

    name = "rdm"
    actions = ("change_colour", "change_object")

    def __init__(self, world: str, model: str = "toy/scenes-t2i", segmenter: str = "toy/scenes-clipseg",
                 clip: str = "toy/scenes-clip", device: str | None = None, **options):
        if world != "scenes":
            raise RegionEditError("RDM is benchmarked on scenes (it needs a positioning text and a target text)")
        self.model = load_model(model, device=device)
        self.segmenter = load_segmenter(segmenter, self.model.device)
        self.clip = None if clip == "none" else load_clip(clip, self.model.device)
        self.options = options

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        outputs = []
        for item in items:
            result = rdm.edit(self.model, item.image.unsqueeze(0), item.record["target_object"],
                              locate=item.record["source_object"], segmenter=self.segmenter, clip=self.clip,
                              progress=False, **self.options)
            outputs.append(MethodOutput((pil_to_tensor(result.image)[0] + 1) / 2, result.mask[0].to(torch.float32)))
        return outputs


class ZoneMethod:
    """ZONE on scenes, all actions: the instruction alone; the final and the coarse masks are scored."""

    name = "zone"

    def __init__(self, world: str, model: str = "toy/scenes-instruct", model2: str | None = None,
                 classifier: str | None = None, segmenter: str = "classical", device: str | None = None, **options):
        from regionedit.methods.actions import ActionClassifier
        from regionedit.segment_everything import load_segment_everything

        if world != "scenes":
            raise RegionEditError("ZONE is benchmarked on scenes (instructions with ground truth)")
        self.model = load_model(model, device=device)
        from regionedit.methods.zone import partner_of

        model2 = partner_of(model) if model2 is None else model2
        self.second = None if model2 in (None, "none") else load_model(model2, device=self.model.device)
        self.classifier = ActionClassifier.load(classifier) if classifier else None
        self.segmenter = load_segment_everything(segmenter, self.model.device)
        self.options = options

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        from regionedit.methods import zone

        outputs = []
        for item in items:
            result = zone.edit(self.model, item.image.unsqueeze(0), item.instruction, second_model=self.second,
                               classifier=self.classifier, segmenter=self.segmenter, progress=False, **self.options)
            outputs.append(MethodOutput((pil_to_tensor(result.image)[0] + 1) / 2, result.final_mask[0, 0],
                                        {"coarse": result.coarse_mask[0, 0]}))
        return outputs


class CaptionEdit:
    """Text-based editing of a toy scene by its captions (a toy PIE-Bench): invert the source with
    its caption, edit toward the target caption. ``variant``: ``ddpm`` (edit-friendly noise maps,
    the paper's skip 36 and target CFG 15), ``ddpm-p2p`` (the same noise space with Prompt-to-Prompt,
    the released code's defaults: skip 12, CFG 9, cross 0.6, self 0.2) or ``ddim-p2p`` (P2P on a
    deterministic DDIM inversion). Change colour and change object only: their captions differ in
    the edited object alone."""

    actions = ("change_colour", "change_object")

    def __init__(self, world: str, variant: str = "ddpm", model: str = "toy/scenes-t2i", device: str | None = None,
                 num_inference_steps: int = 100, source_guidance: float = 3.5, seed: int = 0, **options):
        if world != "scenes":
            raise RegionEditError("caption editing is benchmarked on scenes (every caption edit has a ground truth)")
        if variant not in ("ddpm", "ddpm-p2p", "ddim-p2p"):
            raise RegionEditError(f"unknown caption-editing variant {variant!r} (ddpm, ddpm-p2p, ddim-p2p)")
        self.name = variant
        self.model = load_model(model, device=device)
        self.steps, self.source_guidance, self.seed, self.options = num_inference_steps, source_guidance, seed, options

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        from regionedit.core.inversion import ddim_invert, invert
        from regionedit.methods import ddpm_edit, p2p

        outputs = []
        for item in items:
            source, target = item.record["source_caption"], item.record["target_caption"]
            image = item.image.unsqueeze(0)
            if self.name == "ddim-p2p":
                inversion = ddim_invert(self.model, image, prompt=source, guidance_scale=self.source_guidance,
                                        num_inference_steps=self.steps, progress=False)
            else:
                inversion = invert(self.model, image, prompt=source, guidance_scale=self.source_guidance,
                                   num_inference_steps=self.steps, seed=self.seed, progress=False)
            if self.name == "ddpm":
                result = ddpm_edit.edit(self.model, inversion, target, progress=False, **self.options)
            else:
                result = p2p.edit(self.model, inversion, target, progress=False, **self.options)
            outputs.append(MethodOutput((pil_to_tensor(result.image)[0] + 1) / 2))
        return outputs
