"""Benchmarks that write JSON: every speed or quality figure we quote comes from one of these."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from regionedit import __version__
from regionedit.images import atomic_write


def machine() -> dict:
    """What the benchmark ran on."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "regionedit": __version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Wall time of ``fn()`` in seconds, synchronising the GPU around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def write_json(result: dict, path: str | Path | None) -> str:
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    if path is not None:
        atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))
    return text
