"""`regionedit toyworld export`: a split of a world as PNGs, masks and a JSONL manifest.

Per item: the input image, its part-label map (8-bit PNG; value = index into the manifest's
``labels``), and one ground-truth edit: the target image and the edit mask (255 = may change).
Files are written atomically; rerunning writes the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from regionedit.images import atomic_write, save_png, unit_to_pil
from regionedit.toyworld import faces as faces_world
from regionedit.toyworld import scenes as scenes_world
from regionedit.toyworld.splits import split_seeds

CHUNK = 256


def _gray(array: torch.Tensor) -> Image.Image:
    return Image.fromarray(array.to(torch.uint8).cpu().numpy())


def export(world: str, count: int, out: str | Path, split: str = "benchmark", size: int = 64, log=print) -> Path:
    out = Path(out)
    for sub in ("images", "labels", "targets", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    lines = []
    for start in range(0, count, CHUNK):
        seeds = split_seeds(split, min(CHUNK, count - start), start)
        if world == "faces":
            edits = faces_world.generate_face_edits(seeds, size)
            source, target, mask = edits.edit.source, edits.edit.target, edits.edit.mask
            label_names = faces_world.PARTS
        else:
            edits = scenes_world.generate_edits(seeds, size)
            source, target, mask = edits.source, edits.target, edits.mask
            label_names = scenes_world.GROUPS
        for i, seed in enumerate(seeds):
            name = f"{world}-{split}-{start + i:06d}"
            save_png(unit_to_pil(source.images[i]), out / "images" / f"{name}.png")
            save_png(_gray(source.labels[i]), out / "labels" / f"{name}.png")
            save_png(unit_to_pil(target.images[i]), out / "targets" / f"{name}.png")
            save_png(_gray(mask[i, 0] * 255), out / "masks" / f"{name}.png")
            record = {"id": name, "seed": seed, "split": split, "world": world,
                      "image": f"images/{name}.png", "labels": f"labels/{name}.png",
                      "target": f"targets/{name}.png", "edit_mask": f"masks/{name}.png",
                      "label_names": list(label_names), **edits.record(i), **_describe(world, source, i)}
            lines.append(json.dumps(record, sort_keys=True))
        if log:
            log(f"exported {min(start + CHUNK, count)}/{count}")
    atomic_write(out / "manifest.jsonl", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return out / "manifest.jsonl"


def _describe(world: str, batch, i: int) -> dict:
    if world == "faces":
        values = {}
        for name, factor in faces_world.FACTORS.items():
            value = batch.factors[name][i].item()
            values[name] = factor.choices[int(value)] if factor.kind == "categorical" else round(float(value), 4)
        return {"factors": values}
    return {"caption": batch.caption(i), "objects": batch.objects(i),
            "ground": scenes_world.GROUNDS[int(batch.params["ground"][i])]}


def read_manifest(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def load_png(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)
