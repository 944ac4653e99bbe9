"""Editing methods adapted to the quality harness (`regionedit bench quality --method NAME`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regionedit.bench.quality import BenchItem, MethodOutput
from regionedit.errors import RegionEditError
from regionedit.images import pil_to_tensor
from regionedit.methods import rdm
from regionedit.models import load_model
from regionedit.segment import load_clip, load_segmenter


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
