"""Attribute probes: small CNNs that read the toy worlds' factors back from an image.

They judge edits: did "open the eyes" open them, is the ball blue now, is the tree gone? Labels are
free (we render the images), so the probes train on fresh renders from the train split, with noise,
blur and small shifts so that they also read the imperfect outputs of diffusion models.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from regionedit.errors import RegionEditError
from regionedit.images import atomic_write, to_model_range
from regionedit.toyworld import faces as faces_world
from regionedit.toyworld import scenes as scenes_world
from regionedit.toyworld.splits import split_seeds

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class Head:
    name: str
    kind: str  # "continuous" (in [0, 1] after scaling), "categorical" or "binary"
    classes: int = 1


def face_heads() -> list[Head]:
    heads = []
    for factor in faces_world.FACTORS.values():
        heads.append(Head(factor.name, factor.kind, factor.classes if factor.kind == "categorical" else 1))
    return heads


def scene_heads() -> list[Head]:
    heads = [Head("ground", "categorical", len(scenes_world.GROUNDS))]
    for kind in scenes_world.KINDS:
        heads += [Head(f"{kind}_present", "binary"), Head(f"{kind}_colour", "categorical", len(scenes_world.COLOURS))]
    return heads


class ProbeNet(nn.Module):
    """Five strided convolutions to 4×4, one hidden layer, one linear head per factor."""

    def __init__(self, heads: Sequence[Head], width: int = 32):
        super().__init__()
        self.heads = list(heads)
        w = width
        layers, channels = [], [3, w, 2 * w, 2 * w, 4 * w, 4 * w]
        for i in range(5):
            stride = 1 if i == 2 else 2
            layers += [nn.Conv2d(channels[i], channels[i + 1], 3, stride, 1), nn.GroupNorm(8, channels[i + 1]), nn.SiLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(16 * channels[-1], 256), nn.SiLU())
        self.out = nn.Linear(256, sum(h.classes for h in self.heads))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The 256-d features before the heads (for Fréchet distances between image sets)."""
        if images.shape[-2:] != (64, 64):
            images = F.interpolate(images, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        return self.hidden(self.features(to_model_range(images)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images B×3×H×W in [0, 1] (any size; resized to 64) → raw head outputs by name."""
        logits = self.out(self.embed(images))
        return dict(zip([h.name for h in self.heads], logits.split([h.classes for h in self.heads], dim=1), strict=True))


# ------------------------------------------------------------------------------- labels
def _unit(factor: faces_world.Factor, values: torch.Tensor) -> torch.Tensor:
    return (values - factor.low) / (factor.high - factor.low)


def face_labels(factors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(target, weight) per head; weight 0 where the factor cannot be seen (closed eyes' iris colour…)."""
    labels = {}
    for name, factor in faces_world.FACTORS.items():
        value = factors[name]
        weight = torch.ones(value.shape[0], device=value.device)
        if name in faces_world.VISIBLE_WHEN:
            condition, threshold = faces_world.VISIBLE_WHEN[name]
            weight = (factors[condition] >= threshold).float()
        target = _unit(factor, value) if factor.kind == "continuous" else value
        labels[name] = (target, weight)
    return labels


def scene_labels(params: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    batch = params["ground"].shape[0]
    device = params["ground"].device
    labels = {"ground": (params["ground"], torch.ones(batch, device=device))}
    for k, kind in enumerate(scenes_world.KINDS):
        has = (params["present"] & (params["kind"] == k))
        present = has.any(dim=1)
        colour = (params["colour"] * has).sum(dim=1)  # kinds are unique within a scene
        labels[f"{kind}_present"] = (present.float(), torch.ones(batch, device=device))
        labels[f"{kind}_colour"] = (colour, present.float())
    return labels


WORLDS = {
    "faces": (face_heads, lambda seeds, device: faces_world.generate_faces(seeds, device=device), lambda b: face_labels(b.factors)),
    "scenes": (scene_heads, lambda seeds, device: scenes_world.generate_scenes(seeds, device=device), lambda b: scene_labels(b.params)),
}


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise RegionEditError(f"unknown world {world!r} (worlds: {', '.join(WORLDS)})")


# ----------------------------------------------------------------------------- training
def probe_loss(outputs: dict, labels: dict, heads: Sequence[Head]) -> torch.Tensor:
    total = 0.0
    for head in heads:
        target, weight = labels[head.name]
        out = outputs[head.name]
        if head.kind == "continuous":
            loss = F.smooth_l1_loss(torch.sigmoid(out[:, 0]), target.float(), reduction="none", beta=0.05) * 20
        elif head.kind == "binary":
            loss = F.binary_cross_entropy_with_logits(out[:, 0], target.float(), reduction="none")
        else:
            loss = F.cross_entropy(out, target.long(), reduction="none")
        total = total + (loss * weight).sum() / weight.sum().clamp_min(1)
    return total


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise, occasional blur and ±2-pixel shifts: what a diffusion model's output looks like."""
    batch = images.shape[0]
    device = images.device
    shifts = torch.randint(-2, 3, (batch, 2), generator=generator).tolist()
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    h, w = images.shape[-2:]
    images = torch.stack([padded[i, :, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] for i, (dx, dy) in enumerate(shifts)])
    blur = torch.rand(batch, generator=generator) < 0.3
    if blur.any():
        kernel = torch.tensor([0.25, 0.5, 0.25], device=device)
        kernel = (kernel.view(1, 3) * kernel.view(3, 1)).expand(3, 1, 3, 3)
        blurred = F.conv2d(F.pad(images[blur.to(device)], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        images[blur.to(device)] = blurred
    sigma = torch.rand(batch, 1, 1, 1, generator=generator).to(device) * 0.05
    noise = torch.randn(images.shape, generator=generator).to(device)
    return (images + sigma * noise).clamp(0, 1)


def train_probe(
    world: str,
    steps: int = 3000,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log=print,
    log_every: int = 100,
) -> tuple[ProbeNet, dict]:
    """Train a probe on fresh renders of the train split; returns the network and its settings."""
    _check_world(world)
    make_heads, generate, make_labels = WORLDS[world]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = ProbeNet(make_heads()).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = time.perf_counter()
    for step in range(steps):
        batch = generate(split_seeds("train", batch_size, offset=step * batch_size), device)
        images = augment(batch.images, generator)
        loss = probe_loss(net(images), make_labels(batch), net.heads)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if log and (step % log_every == 0 or step == steps - 1):
            log(f"{world} probe step {step}/{steps} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    settings = {"world": world, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
                "seed": seed, "train_seconds": round(time.perf_counter() - start, 1), "device": str(device)}
    return net.eval(), settings


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(net: ProbeNet, images: torch.Tensor, chunk: int = 512) -> dict[str, torch.Tensor]:
    """Decoded readings: continuous factors in [0, 1] units, class indices, booleans as 0/1."""
    outputs: dict[str, list] = {h.name: [] for h in net.heads}
    for i in range(0, images.shape[0], chunk):
        raw = net(images[i : i + chunk].to(next(net.parameters()).device).float())
        for head in net.heads:
            out = raw[head.name]
            if head.kind == "continuous":
                value = torch.sigmoid(out[:, 0])
            elif head.kind == "binary":
                value = (out[:, 0] > 0).float()
            else:
                value = out.argmax(dim=1)
            outputs[head.name].append(value.cpu())
    return {k: torch.cat(v) for k, v in outputs.items()}


def head_correct(head: Head, prediction: torch.Tensor, target: torch.Tensor, tolerance: float = 0.1) -> torch.Tensor:
    if head.kind == "continuous":
        return (prediction - target.float().cpu()).abs() <= tolerance
    return prediction.long() == target.long().cpu()


def evaluate_probe(net: ProbeNet, world: str, count: int = 4000, split: str = "validation") -> dict:
    """Held-out accuracy per head, and per class (recall) for categorical and binary heads."""
    _check_world(world)
    _, generate, make_labels = WORLDS[world]
    device = next(net.parameters()).device
    batch = generate(split_seeds(split, count), device)
    predictions = predict(net, batch.images)
    labels = make_labels(batch)
    report = {"split": split, "count": count, "heads": {}}
    for head in net.heads:
        target, weight = labels[head.name]
        keep = weight.cpu() > 0
        tolerance = faces_world.FACTORS[head.name].tolerance if world == "faces" and head.kind == "continuous" else 0.1
        correct = head_correct(head, predictions[head.name], target, tolerance)[keep]
        entry = {"accuracy": correct.float().mean().item(), "judged": int(keep.sum())}
        if head.kind != "continuous":
            per_class = {}
            for c in range(max(head.classes, 2)):
                of_class = target.long().cpu()[keep] == c
                if of_class.any():
                    per_class[str(c)] = correct[of_class].float().mean().item()
            entry["per_class_recall"] = per_class
            entry["min_class_recall"] = min(per_class.values())
        else:
            entry["tolerance"] = tolerance
        report["heads"][head.name] = entry
    report["min_accuracy"] = min(min(e["accuracy"], e.get("min_class_recall", 1.0)) for e in report["heads"].values())
    return report


# ------------------------------------------------------------------------------ storage
def save_probe(net: ProbeNet, folder: str | Path, card: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().half().contiguous() for k, v in net.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    config = {"heads": [h.__dict__ for h in net.heads], "world": card["settings"]["world"]}
    atomic_write(folder / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=2)))
    atomic_write(folder / "card.json", lambda tmp: tmp.write_text(json.dumps(card, indent=2)))
    return folder


def load_probe(world: str, folder: str | Path | None = None, device: torch.device | str = "cpu") -> ProbeNet:
    """The shipped probe of ``world`` (or one saved in ``folder``), in fp32 on ``device``."""
    _check_world(world)
    folder = Path(folder) if folder is not None else WEIGHTS_DIR / f"probe-{world}"
    if not (folder / "model.safetensors").exists():
        raise RegionEditError(
            f"no {world} probe at {folder}: train one with `regionedit toyworld train probe-{world}`"
        )
    config = json.loads((folder / "config.json").read_text())
    net = ProbeNet([Head(**h) for h in config["heads"]])
    net.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
    return net.to(device).eval()
