"""Seed ranges of the toy worlds' splits. Training draws only from ``train``; ``benchmark`` is for
`regionedit bench quality` and never used to train or select anything."""

from __future__ import annotations

from regionedit.errors import RegionEditError

SPLIT_START = {"train": 0, "validation": 2_000_000_000, "benchmark": 3_000_000_000}
SPLIT_SIZE = 1_000_000_000


def split_seeds(split: str, count: int, offset: int = 0) -> list[int]:
    """Seeds ``offset .. offset+count`` of ``split``."""
    if split not in SPLIT_START:
        raise RegionEditError(f"unknown split {split!r} (splits: {', '.join(SPLIT_START)})")
    if count < 0 or offset < 0 or offset + count > SPLIT_SIZE:
        raise RegionEditError(f"split {split} holds seeds 0..{SPLIT_SIZE}; asked for {offset}..{offset + count}")
    start = SPLIT_START[split] + offset
    return list(range(start, start + count))
