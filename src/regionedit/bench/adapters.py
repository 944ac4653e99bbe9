"""Editing methods adapted to the quality harness (`regionedit bench quality --method NAME`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from regionedit import defaults
from regionedit.errors import NothingLocated, RegionEditError
from regionedit.images import pil_to_tensor
from regionedit.toyworld.benchmark import BenchItem, MethodOutput


def _item_options(item: BenchItem, options: dict) -> dict:
    """The editor's keyword arguments for one item: the method's ``options`` with ``seed`` as the
    generator (default 0), edited at the item's own size unless ``max_side`` says otherwise."""
    options = dict(options)
    return {"generator": options.pop("seed", 0), "max_side": max(item.image.shape[-2:]), **options}


def _unit(image) -> torch.Tensor:
    """An edited PIL image → 3×H×W in [0, 1]."""
    return (pil_to_tensor(image)[0] + 1) / 2


class RDMMethod:
    """RDM on scenes: locate the instruction's source object, replace it by the target text.
    ``region="gt"``: edit the ground-truth edit mask instead of the located one (RDM's editing
    measured apart from its segmenter; named ``rdm-gtmask``). ``target``: the target text, the
    target object's phrase ("object": "a white star", as the paper's users write it) or the whole
    target caption ("caption": the toy text-to-image model was trained on scene captions only)."""

    actions = ("change_colour", "change_object")

    def __init__(self, world: str, model: str = "toy/scenes-t2i", segmenter: str = "toy/scenes-clipseg",
                 clip: str = "toy/scenes-clip", device: str | None = None, region: str = "located",
                 target: str = "object", **options):
        from regionedit.editors import RDMEditor
        from regionedit.methods.rdm import DEFAULT_CLIP_SCALE

        if world != "scenes":
            raise RegionEditError("RDM is benchmarked on scenes (it needs a positioning text and a target text)")
        if region not in ("located", "gt"):
            raise RegionEditError(f"RDM's region is 'located' (by the segmenter) or 'gt' (the ground-truth mask), not {region!r}")
        if target not in ("object", "caption"):
            raise RegionEditError(f"RDM's target text is the target 'object' phrase or the target 'caption', not {target!r}")
        self.name, self.region = ("rdm" if region == "located" else "rdm-gtmask"), region
        self.target_field = f"target_{target}"
        self.editor = RDMEditor.from_pretrained(model, device=device, segmenter=segmenter if region == "located" else None,
                                                clip=clip)
        self.editor.set_progress_bar_config(disable=True)
        if region == "located":
            self.editor.loaded_segmenter()  # the companions load (or fail) here, as the bench starts
        self.editor.loaded_clip(options.get("clip_guidance_scale", DEFAULT_CLIP_SCALE))
        self.options = options

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        outputs = []
        for item in items:
            where = {"locate": item.record["source_object"]} if self.region == "located" else {"mask": item.mask.reshape(1, 1, *item.mask.shape[-2:])}
            try:
                result = self.editor(item.image.unsqueeze(0), item.record[self.target_field], **where,
                                     **_item_options(item, self.options))
            except NothingLocated as exc:  # a failed edit, not a failed run (any other error still stops the run)
                outputs.append(MethodOutput.refusal(item, str(exc)))
                continue
            outputs.append(MethodOutput(_unit(result.image), result.masks["edit"][0].to(torch.float32)))
        return outputs


class ZoneMethod:
    """ZONE on scenes, all actions: the instruction alone; the final and the coarse masks are scored."""

    name = "zone"

    def __init__(self, world: str, model: str = "toy/scenes-instruct", model2: str | None = None,
                 classifier: str = "auto", segmenter: str = "classical", device: str | None = None, **options):
        from regionedit.editors import ZoneEditor

        if world != "scenes":
            raise RegionEditError("ZONE is benchmarked on scenes (instructions with ground truth)")
        self.editor = ZoneEditor.from_pretrained(model, device=device, second_model="auto" if model2 is None else model2,
                                                 classifier=classifier, segmenter=segmenter)
        self.editor.set_progress_bar_config(disable=True)
        self.options = options

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        outputs = []
        for item in items:
            result = self.editor(item.image.unsqueeze(0), item.instruction, **_item_options(item, self.options))
            outputs.append(MethodOutput(_unit(result.image), result.masks["final"][0, 0],
                                        {"coarse": result.masks["coarse"][0, 0]}, action=result.recipe["action"]))
        return outputs


CAPTION_VARIANTS = ("ddpm", "ddim", "ddpm-p2p", "ddim-p2p")


class CaptionEdit:
    """Text-based editing of a toy scene by its captions (a toy PIE-Bench): invert the source with
    its caption, edit toward the target caption. ``variant``: ``ddpm`` (edit-friendly noise maps,
    the paper's skip 36 and target CFG 15), ``ddim`` (the paper's baseline: a deterministic DDIM
    inversion with the same prompts, skip and CFG), ``ddpm-p2p`` (the same noise space with Prompt-to-Prompt,
    the released code's defaults: skip 12, CFG 9, cross 0.6, self 0.2) or ``ddim-p2p`` (P2P on a
    deterministic DDIM inversion). Change colour and change object only: their captions differ in
    the edited object alone. ``local_blend=True`` (P2P variants): P2P's LocalBlend by the edited
    object's kind words in the source and target captions ("ball"; "box", "ball"), as a user of the
    P2P code names the words of the edit; ``local_blend="text"``: blending from the text-located
    mask of the source object (``segmenter``, scores ≥ ``text_threshold``, grown by ``blend_dilation``
    pixels; named ``...-blend-text``; an edit whose object is not found is a refusal, as in RDM), named
    by its positioning text ("the ball", ``blend_text="object"``) or by its words in the source caption
    ("a red ball", ``blend_text="caption"``: the prompt a P2P user wrote, named ``...-blend-caption``);
    ``local_blend="gt"``: blending from the ground-truth edit mask instead (what a perfect mask source
    would give; named ``...-blend-gt``)."""

    actions = ("change_colour", "change_object")

    def __init__(self, world: str, variant: str = "ddpm", model: str = "toy/scenes-t2i", device: str | None = None,
                 num_inference_steps: int = defaults.DDPM_STEPS,
                 source_guidance: float = defaults.DDPM_SOURCE_GUIDANCE, seed: int = 0, local_blend: bool | str = False,
                 segmenter: str = "toy/scenes-clipseg", text_threshold: float = defaults.RDM_THRESHOLD,
                 blend_dilation: int = 0, blend_text: str = "object", **options):
        from regionedit.editors import DDPMEditor
        from regionedit.segment import load_segmenter

        if world != "scenes":
            raise RegionEditError("caption editing is benchmarked on scenes (every caption edit has a ground truth)")
        if variant not in CAPTION_VARIANTS:
            raise RegionEditError(f"unknown caption-editing variant {variant!r} ({', '.join(CAPTION_VARIANTS)})")
        if local_blend not in (False, True, "gt", "text"):
            raise RegionEditError("local_blend is true (by the kind words), 'text' (the segmenter's mask), 'gt' (the "
                                  f"ground-truth mask) or false, not {local_blend!r}")
        if local_blend and not variant.endswith("-p2p"):
            raise RegionEditError("local_blend is a Prompt-to-Prompt option: use ddpm-p2p or ddim-p2p")
        if blend_dilation < 0:
            raise RegionEditError(f"blend_dilation must be ≥ 0 pixels, got {blend_dilation}")
        if blend_text not in ("object", "caption"):
            raise RegionEditError(f"blend_text is 'object' (the positioning text) or 'caption' (the source caption's "
                                  f"words for the object), not {blend_text!r}")
        blend_name = {False: "", True: "-blend", "gt": "-blend-gt", "text": "-blend-text"}[local_blend]
        self.name = variant + ("-blend-caption" if local_blend == "text" and blend_text == "caption" else blend_name)
        self.variant, self.local_blend = variant, local_blend
        self.editor = DDPMEditor.from_pretrained(model, device=device)
        self.editor.set_progress_bar_config(disable=True)
        self.segmenter = load_segmenter(segmenter, device) if local_blend == "text" else None
        self.text_threshold, self.blend_dilation, self.blend_text = text_threshold, blend_dilation, blend_text
        self.steps, self.source_guidance, self.seed, self.options = num_inference_steps, source_guidance, seed, options

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        outputs = []
        for item in items:
            image = item.image.unsqueeze(0)
            inversion = self.editor.invert(image, prompt=item.record["source_caption"], guidance_scale=self.source_guidance,
                                           num_inference_steps=self.steps, generator=self.seed,
                                           inversion_type=self.variant.split("-")[0],
                                           max_side=max(image.shape[-2:]), record_attention=self.variant == "ddpm-p2p")
            blend = {}
            if self.local_blend == "gt":
                blend = {"blend_mask": item.mask.reshape(1, 1, *item.mask.shape[-2:]).float()}
            elif self.local_blend == "text":
                try:
                    text = item.record["source_object"]
                    if self.blend_text == "caption":
                        text = caption_phrase(item.record["source_caption"], text.split()[-1])
                    located = self.segmenter.locate(image, text, self.text_threshold, dilation=self.blend_dilation)
                except NothingLocated as exc:
                    outputs.append(MethodOutput.refusal(item, str(exc)))
                    continue
                blend = {"blend_mask": located.mask.float().cpu()}
            elif self.local_blend:
                blend = {"blend_words": _kind_words(item.record)}
            result = self.editor.edit(inversion, prompt=item.record["target_caption"], p2p=self.variant.endswith("-p2p"),
                                      **blend, **self.options)
            outputs.append(MethodOutput(_unit(result.image), _blend_region(result.masks.get("blend"), image.shape[-2:])))
        return outputs


def _blend_region(alpha: torch.Tensor | None, size) -> torch.Tensor | None:
    """LocalBlend's α (1×1×h×w, latent cells) as the pixels it lets change (H×W), to score as the edit's mask."""
    if alpha is None:
        return None
    return torch.nn.functional.interpolate(alpha.float().cpu(), size=tuple(size), mode="nearest")[0, 0]


def caption_phrase(caption: str, kind: str) -> str:
    """The words of a toy caption that name its object of this kind ("a red ball and a blue box on grass",
    "box" → "a blue box"); the kind alone where no article-colour-kind phrase names it."""
    found = re.search(rf"\b(an? \w+ {re.escape(kind)})\b", caption)
    return found.group(1) if found else kind


def _kind_words(record: dict) -> list[str]:
    """The object kinds an edit names ("a red ball" → "ball"), source first, without repeats."""
    kinds = [record[key].split()[-1] for key in ("source_object", "target_object") if record.get(key)]
    return list(dict.fromkeys(kinds))
