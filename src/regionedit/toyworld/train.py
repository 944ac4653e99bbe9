"""`regionedit toyworld train NAME`: reproduce an embedded toy-world network (the probes, for now)."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from regionedit import __version__
from regionedit.errors import RegionEditError
from regionedit.toyworld import probes

TRAINABLE = {
    "probe-faces": {"world": "faces", "steps": 4000},
    "probe-scenes": {"world": "scenes", "steps": 4000},
}


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def train(name: str, out: str | Path | None = None, steps: int | None = None, device: str | None = None,
          smoke: bool = False, log=print) -> Path:
    """Train ``name`` with its documented settings (``smoke``: a few steps, for tests) and save it."""
    if name not in TRAINABLE:
        raise RegionEditError(f"unknown trainable model {name!r} (trainable: {', '.join(TRAINABLE)})")
    spec = TRAINABLE[name]
    log = log or (lambda message: None)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    steps = 3 if smoke else (steps or spec["steps"])
    start = time.perf_counter()
    net, settings = probes.train_probe(spec["world"], steps=steps, device=device, log=log, log_every=max(1, steps // 40))
    report = probes.evaluate_probe(net, spec["world"], count=64 if smoke else 4000)
    card = {
        "name": name,
        "data": f"fresh renders of the {spec['world']} train split (seeds 0..{steps * settings['batch_size']}), "
                "with noise, blur and ±2 px shifts",
        "settings": settings,
        "hardware": hardware(device),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "regionedit": __version__,
        "torch": torch.__version__,
        "held_out": report,
        "reproduce": f"regionedit toyworld train {name}",
    }
    folder = Path(out) if out is not None else probes.WEIGHTS_DIR / name
    probes.save_probe(net, folder, card)
    log(f"{name}: held-out minimum accuracy {report['min_accuracy']:.3f}; wrote {folder}")
    return folder
