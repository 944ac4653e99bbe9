"""The toy worlds' edit benchmark: edits with ground truth, and a method's outputs scored on them.

1. Items: the first ``count`` edits of a world's benchmark split (fixed seeds, never trained on):
   the input, the instruction in every form, the target and the ground-truth edit mask.
2. The method edits the items in batches (:class:`EditMethod`: a name, ``edit(items) → outputs``
   and optionally the ``actions`` it handles).
3. Scores per action type and overall: edit success as the world's probe reads the output,
   background preservation (PSNR and L1 outside the ground-truth mask), the IoU of the method's own
   masks with the ground truth (where it makes them), seconds per edit and, where the world has an
   embedded ViT, PIE-Bench's structure distance between input and output (×10³; the scenes world
   uses toy/scenes-clip's image tower where PIE-Bench uses DINO; the faces world has none).
   An edit the method refuses (for example RDM when its positioning text locates nothing) counts as
   a failure, with IoU 0; it is left out of the background and structure figures (an untouched
   input would score a perfect background) and counted in ``refused``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import torch

from regionedit import metrics
from regionedit.errors import RegionEditError
from regionedit.toyworld import faces as faces_world
from regionedit.toyworld import probes
from regionedit.toyworld import scenes as scenes_world
from regionedit.toyworld.splits import split_seeds

WORLDS = ("faces", "scenes")


@dataclass
class BenchItem:
    """One benchmark edit: the input, the instruction in every form, and the ground truth."""

    world: str
    seed: int
    image: torch.Tensor  # 3×H×W in [0, 1]
    target: torch.Tensor  # ground-truth result
    mask: torch.Tensor  # 1×H×W ground-truth edit mask (1 = may change)
    action: str
    instruction: str
    record: dict = field(default_factory=dict)  # captions, positioning / target text, factor values…
    object_mask: torch.Tensor | None = None  # 1×H×W visible pixels of the object the edit names in the input (scenes)


@dataclass
class MethodOutput:
    image: torch.Tensor  # 3×H×W in [0, 1]
    mask: torch.Tensor | None = None  # the method's edit mask, if it makes one
    extra_masks: dict[str, torch.Tensor] = field(default_factory=dict)  # other masks to score (e.g. "coarse")
    action: str | None = None  # the action the method read from the instruction (change, add, remove), if it reads one
    refused: str | None = None  # the method's one-line reason where it declined the edit (image: the input)

    @classmethod
    def refusal(cls, item: "BenchItem", reason: str) -> "MethodOutput":
        """What a user is left with when the method declines: the input and an empty mask."""
        return cls(item.image, torch.zeros(item.mask.shape[-2:]), refused=reason)


class EditMethod(Protocol):
    name: str

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]: ...


# ------------------------------------------------------------------------------------ items
def benchmark_items(world: str, count: int, size: int = 64, offset: int = 0,
                    actions: Sequence[str] | None = None, split: str = "benchmark") -> list[BenchItem]:
    """The first ``count`` edits of the world's benchmark split (fixed seeds, never trained on),
    each drawn among ``actions`` (scenes only; default all). ``split="validation"``: the split on
    which settings are chosen."""
    if world not in WORLDS:
        raise RegionEditError(f"unknown world {world!r} (worlds: {', '.join(WORLDS)})")
    seeds = split_seeds(split, count, offset)
    if world == "scenes":
        edits = scenes_world.generate_edits(seeds, size, actions=actions or scenes_world.ACTIONS)
        source, target, mask = edits.source, edits.target, edits.mask
        named = edits.source.object_mask(edits.slot)  # empty for additions: the object is not there yet
    else:
        if actions:
            raise RegionEditError("choosing actions is supported for scenes only")
        edits = faces_world.generate_face_edits(seeds, size)
        source, target, mask = edits.edit.source, edits.edit.target, edits.edit.mask
        named = None
    records = [edits.record(i) for i in range(count)]
    return [
        BenchItem(world, seeds[i], source.images[i], target.images[i], mask[i], records[i]["action"],
                  records[i]["instruction"], records[i],
                  None if named is None or records[i]["action"] == "add" else named[i])
        for i in range(count)
    ]


# ---------------------------------------------------------------------------------- success
def edit_success(world: str, items: Sequence[BenchItem], images: torch.Tensor, probe) -> torch.Tensor:
    """Did each output do what its instruction asked, as the probe reads it? (B,) bool."""
    reading = probes.predict(probe, images)
    if world == "faces":
        return _face_success(items, reading)
    return _scene_success(items, reading)


def _face_success(items: Sequence[BenchItem], reading: dict) -> torch.Tensor:
    results = []
    for i, item in enumerate(items):
        factor = faces_world.FACTORS[item.record["factor"]]
        read = float(reading[factor.name][i])
        source, target = item.record["source_value"], item.record["target_value"]
        if factor.kind == "continuous":
            span = factor.high - factor.low
            read_value, source_unit, target_unit = read, (source - factor.low) / span, (target - factor.low) / span
            # Moved at least halfway from the source value to the target, or reached it.
            ok = abs(read_value - target_unit) <= max(factor.tolerance, 0.5 * abs(target_unit - source_unit))
        else:
            ok = round(read) == round(target)
        results.append(ok)
    return torch.tensor(results)


def _scene_success(items: Sequence[BenchItem], reading: dict) -> torch.Tensor:
    return torch.tensor([_scene_ok(item, {k: v[i] for k, v in reading.items()}) for i, item in enumerate(items)])


def _scene_ok(item: BenchItem, reading: dict) -> bool:
    """change colour / add: the object is there in the asked colour; change object: and the old one
    is gone; remove: the object is gone."""
    def present(kind: str) -> bool:
        return bool(reading[f"{kind}_present"] > 0.5)

    record = item.record
    old_kind = record["source_object"].split()[-1] if record["source_object"] else None
    if item.action == "remove":
        return not present(old_kind)
    *_, colour, kind = record["target_object"].split()
    ok = present(kind) and scenes_world.COLOURS[int(reading[f"{kind}_colour"])] == colour
    return ok and not (item.action == "change_object" and present(old_kind))


# ------------------------------------------------------------------------------------- run
def run_benchmark(world: str, method: EditMethod, count: int = 200, size: int = 64, batch_size: int = 16,
                  probe=None, split: str = "benchmark") -> dict:
    """Run ``method`` on ``count`` edits of ``world``'s ``split`` (benchmark or validation) and score it."""
    items = benchmark_items(world, count, size, actions=getattr(method, "actions", None), split=split)
    probe = probe or probes.load_probe(world)
    outputs: list[MethodOutput] = []
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        outputs += method.edit(items[i : i + batch_size])
    seconds = time.perf_counter() - start
    images = torch.stack([o.image.float().cpu().clamp(0, 1) for o in outputs])
    sources = torch.stack([item.image for item in items])
    masks = torch.stack([item.mask for item in items])
    refused = torch.tensor([o.refused is not None for o in outputs])
    success = edit_success(world, items, images, probe) & ~refused
    bg_psnr = metrics.psnr(images, sources, masks, "outside").masked_fill(refused, float("nan"))
    bg_l1 = metrics.l1(images, sources, masks, "outside").masked_fill(refused, float("nan"))
    structure = _structure_distances(world, images, sources)
    if structure is not None:
        structure = structure.masked_fill(refused, float("nan"))
    ious = {"mask_iou": _ious(items, [o.mask for o in outputs])}
    if any(item.object_mask is not None for item in items):  # the mask against the object the edit names
        ious["object_mask_iou"] = _ious(items, [o.mask for o in outputs], truth="object_mask")
    for name in sorted({k for o in outputs for k in o.extra_masks}):
        ious[f"{name}_mask_iou"] = _ious(items, [o.extra_masks.get(name) for o in outputs])
    if any(o.action is not None for o in outputs):
        ious["action_accuracy"] = _action_correct(items, [o.action for o in outputs])
    rows = {}
    for action in sorted({item.action for item in items}) + ["overall"]:
        keep = torch.tensor([action == "overall" or item.action == action for item in items])
        rows[action] = _row(keep, success, bg_psnr, bg_l1, ious)
        if refused.any():
            rows[action]["refused"] = _mean(refused[keep].float())
        if structure is not None:
            rows[action]["structure_distance"] = _mean(structure[keep])
    return {
        "world": world, "method": method.name, "count": len(items), "size": size, "split": split,
        "seconds_per_edit": round(seconds / len(items), 5), "results": rows,
    }


STRUCTURE_VIT = {"scenes": "toy/scenes-clip"}  # the ViT whose keys measure structure, per world


@lru_cache(maxsize=2)
def _structure_model(name: str) -> torch.nn.Module:
    from transformers import CLIPModel

    from regionedit.models.loading import load_transformers

    model, _ = load_transformers(name, CLIPModel, "cpu")
    return model.vision_model.eval()


def _structure_distances(world: str, images: torch.Tensor, sources: torch.Tensor) -> torch.Tensor | None:
    name = STRUCTURE_VIT.get(world)
    return None if name is None else metrics.structure_distance(_structure_model(name), images, sources)


def _mean(values: torch.Tensor) -> float | None:
    values = values[~values.isnan()]
    return round(float(values.mean()), 4) if len(values) else None


def _ious(items: Sequence[BenchItem], masks: list[torch.Tensor | None], truth: str = "mask") -> torch.Tensor:
    """IoU of each method mask with the item's ``truth`` mask (the edit mask, or the named object's);
    NaN where either is missing."""
    values = torch.full((len(items),), float("nan"))
    for i, mask in enumerate(masks):
        reference = getattr(items[i], truth)
        if mask is not None and reference is not None:
            values[i] = metrics.mask_iou(mask.float().cpu().reshape(1, -1), reference.float().cpu().reshape(1, -1))[0]
    return values


def _action_correct(items: Sequence[BenchItem], actions: list[str | None]) -> torch.Tensor:
    """1 where the method read the item's action (change colour and change object are both "change"),
    NaN where it read none."""
    return torch.tensor([float("nan") if read is None else float(read == scenes_world.zone_action(item.action))
                         for item, read in zip(items, actions, strict=True)])


def _row(keep, success, bg_psnr, bg_l1, ious: dict[str, torch.Tensor]) -> dict:
    return {
        "count": int(keep.sum()),
        "edit_success": _mean(success[keep].float()),
        "background_psnr": _mean(bg_psnr[keep]),
        "background_l1": _mean(bg_l1[keep]),
        **{name: _mean(values[keep]) for name, values in ious.items()},
    }

