"""`regionedit bench quality`: run an editing method over a toy world's benchmark split.

Per action type and overall it reports background preservation (PSNR and L1 outside the
ground-truth edit mask), edit success judged by the world's probe, the IoU of the method's own
mask with the ground-truth mask (where the method makes one), PIE-Bench's structure distance
(scenes world) and seconds per edit; the items and
the scoring are the toy worlds' benchmark (:mod:`regionedit.toyworld.benchmark`).

Methods plug in through :class:`EditMethod`: a name, ``edit(items) → outputs`` and optionally the
``actions`` they handle. Two baselines come with the harness: ``identity`` (returns the input) and
``oracle`` (returns the ground truth); the editing methods are adapted in ``bench/adapters.py``,
the plain instruct model in :mod:`regionedit.toyworld.evaluation` (its bar is measured with it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from regionedit.bench import machine
from regionedit.bench.adapters import CAPTION_VARIANTS
from regionedit.errors import RegionEditError
from regionedit.toyworld.benchmark import (
    WORLDS,
    BenchItem,
    EditMethod,
    MethodOutput,
    benchmark_items,
    edit_success,
    run_benchmark,
)

__all__ = [
    "WORLDS", "BenchItem", "EditMethod", "MethodOutput", "benchmark_items", "edit_success", "Identity", "Oracle",
    "METHODS", "register_method", "run_quality", "markdown_table", "make_method",
]


class Identity:
    """Returns the input unchanged: perfect background, no edit."""

    name = "identity"

    def __init__(self, world: str | None = None):
        self.world = world

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        return [MethodOutput(item.image.clone()) for item in items]


class Oracle:
    """Returns the ground-truth target and mask: the best any method can score."""

    name = "oracle"

    def __init__(self, world: str | None = None):
        self.world = world

    def edit(self, items: Sequence[BenchItem]) -> list[MethodOutput]:
        return [MethodOutput(item.target.clone(), item.mask.clone()) for item in items]


def _rdm(**options) -> EditMethod:
    from regionedit.bench.adapters import RDMMethod

    return RDMMethod(**options)


def _zone(**options) -> EditMethod:
    from regionedit.bench.adapters import ZoneMethod

    return ZoneMethod(**options)


def _instruct(**options) -> EditMethod:
    from regionedit.toyworld.evaluation import InstructBaseline

    return InstructBaseline(**options)


def _caption_edit(variant: str):
    def factory(**options) -> EditMethod:
        from regionedit.bench.adapters import CaptionEdit

        return CaptionEdit(variant=variant, **options)

    return factory


METHODS: dict[str, Callable[..., EditMethod]] = {
    "identity": Identity, "oracle": Oracle, "rdm": _rdm, "zone": _zone, "instruct": _instruct,
    **{variant: _caption_edit(variant) for variant in CAPTION_VARIANTS},
}


def register_method(name: str, factory: Callable[..., EditMethod]) -> None:
    """Make ``factory(world=..., **options)`` available as ``--method name``."""
    METHODS[name] = factory


def run_quality(world: str, method: EditMethod, count: int = 200, size: int = 64, batch_size: int = 16,
                probe=None, progress: bool = False, split: str = "benchmark") -> dict:
    """Run ``method`` on ``count`` edits of ``world``'s ``split`` (benchmark or validation) and score it."""
    scores = run_benchmark(world, method, count, size, batch_size, probe, split)
    return {"benchmark": "quality", **scores, "machine": machine()}


EXTRA_COLUMNS = {"object_mask_iou": "mask IoU with the named object", "structure_distance": "structure distance (×10³)",
                 "action_accuracy": "action accuracy",
                 "refused": "refused (counted as failures)"}


def markdown_table(result: dict) -> str:
    extra = [k for k in EXTRA_COLUMNS if any(row.get(k) is not None for row in result["results"].values())]
    lines = [
        f"### {result['method']} on {result['world']} ({result['count']} {result.get('split', 'benchmark')} edits, "
        f"{result['seconds_per_edit']} s per edit)",
        "",
        "| action | n | edit success | background PSNR (dB) | background L1 | mask IoU |"
        + "".join(f" {EXTRA_COLUMNS[k]} |" for k in extra),
        "| --- | --- | --- | --- | --- | --- |" + " --- |" * len(extra),
    ]
    for action, row in result["results"].items():
        cells = [row.get(k) if row.get(k) is not None else "–"
                 for k in ("edit_success", "background_psnr", "background_l1", "mask_iou", *extra)]
        lines.append(f"| {action} | {row['count']} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def make_method(name: str, world: str, options: dict) -> EditMethod:
    """Build ``--method name`` for ``world`` with ``--option key=value`` options."""
    if name not in METHODS:
        raise RegionEditError(f"unknown method {name!r} (methods: {', '.join(METHODS)})")
    try:
        return METHODS[name](world=world, **options)
    except TypeError as exc:
        raise RegionEditError(f"method {name}: bad options {options}: {exc}") from None
