"""Benchmarks of the direction-discovery methods (RBE, JICA).

- ``bench_discover``: seconds to find k RBE directions at one timestep (speed).
- ``bench_directions``: on toy faces, where the edits land (share of the pixel-change energy inside
  the dilated region mask), which ground-truth factors they move (probe; the top direction moves
  *exactly one* factor when one factor moves by ≥ ``MOVE_THRESHOLD`` — a tenth of a continuous
  factor's range, or a flipped class — and no other does; a factor hidden before or after, such as
  the iris colour of closed eyes, does not count as moved), how well directions found on one face
  transfer to others (face 0's top direction on every face, and each face's on the face before it),
  and for JICA how much more each individual direction changes its own region
  than the other one (change energy in its dilated region over the other's).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from regionedit.bench import machine, timed
from regionedit.errors import RegionEditError
from regionedit.images import atomic_write
from regionedit.masks import dilate, face_part_mask
from regionedit.methods import jica, rbe
from regionedit.methods.hspace_edit import (
    DEFAULT_TIMESTEP,
    EditStart,
    sample_with_direction,
    start_from_image,
    to_pixels,
)
from regionedit.models import DiffusionModel, load_model
from regionedit.toyworld import faces as faces_world
from regionedit.toyworld import probes
from regionedit.toyworld.splits import split_seeds

CELEBAHQ_RANDOM = "random/ddpm-celebahq-256"
MOVE_THRESHOLD = 0.1
FACTOR_READING = "visible factors only"  # named in progress files: see _factor_moves


def celebahq_sized_random(seed: int = 0) -> dict:
    """Random weights in the architecture of google/ddpm-ema-celebahq-256 (about 114 M parameters)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(
            sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
            down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        )
    return {"unet": unet, "scheduler": DDPMScheduler(num_train_timesteps=1000)}


def _model(name: str, device: torch.device) -> DiffusionModel:
    if name == CELEBAHQ_RANDOM:
        return DiffusionModel(**celebahq_sized_random(), name=name, device=device, dtype=torch.float32)
    return load_model(name, device=device, dtype=torch.float32)


def bench_discover(model_name: str, device: torch.device, k: int = 3, complement_rank: int = 8,
                   max_iterations: int = 50, tolerance: float = 1e-5, jvp: str = "finite-difference") -> dict:
    model = _model(model_name, device)
    size = model.native_resolution
    face = faces_world.generate_faces(split_seeds("validation", 1), size=size, device=device)
    start = start_from_image(model, face.images)
    mask = face_part_mask("eyes", (size, size))
    rbe.discover(model, start, mask, k=1, complement_rank=1, max_iterations=2)  # warm-up
    seconds, directions = timed(lambda: rbe.discover(model, start, mask, k=k, complement_rank=complement_rank,
                                                      max_iterations=max_iterations, tolerance=tolerance, jvp=jvp), device)
    return {
        "benchmark": "discover", "model": model_name, "device": str(device), "size": size, "k": k,
        "complement_rank": complement_rank, "jvp": jvp, "discover_s": round(seconds, 3),
        "iters": directions.report["iterations"], "converged": directions.report["converged"],
        "leak_before": directions.report["leak_before"], "leak_after": directions.report["leak_after"],
        "tolerance": tolerance, "unet_parameters": sum(p.numel() for p in model.unet.parameters()),
        "machine": machine(),
    }


# ------------------------------------------------------------------------------ toy faces
def _energy_inside(change: torch.Tensor, region: torch.Tensor) -> float:
    energy = change.pow(2).sum(dim=1, keepdim=True)
    return float((energy * region).sum() / energy.sum().clamp_min(1e-20))


def _visible(reading: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Whether the probe's reading of factor ``name`` means anything: an iris needs open eyes, a hat
    colour a hat (``faces.VISIBLE_WHEN``, in the probe's [0, 1] units); the probe was never taught
    a hidden factor, so its reading of one is arbitrary."""
    if name not in faces_world.VISIBLE_WHEN:
        return torch.ones_like(next(iter(reading.values())), dtype=torch.bool)
    condition, threshold = faces_world.VISIBLE_WHEN[name]
    factor = faces_world.FACTORS[condition]
    unit_threshold = (threshold - factor.low) / (factor.high - factor.low) if factor.kind == "continuous" else threshold
    return reading[condition] >= unit_threshold


def _factor_moves(net, reference: torch.Tensor, edited: torch.Tensor, hidden_too: bool = False) -> dict[str, float]:
    """How much each face factor changed, as the probe reads it (classes: 1 if it flipped).

    A factor hidden before or after the edit (the iris of eyes that were closed) has not moved:
    the factor that hid it has. ``hidden_too`` counts the probe's arbitrary reading of hidden
    factors as well (how the figure was computed before 2026-12-04)."""
    before, after = probes.predict(net, reference), probes.predict(net, edited)
    moves = {}
    for head in net.heads:
        if head.kind == "continuous":
            moved = (after[head.name] - before[head.name]).abs()
        else:
            moved = (after[head.name] != before[head.name]).float()
        if not hidden_too:
            moved = moved * (_visible(before, head.name) & _visible(after, head.name))
        moves[head.name] = float(moved.mean())
    return moves


def _moves_exactly_one(moves: dict[str, float]) -> bool:
    return sum(move >= MOVE_THRESHOLD for move in moves.values()) == 1


def _edit(model: DiffusionModel, start: EditStart, direction: torch.Tensor, strength: float) -> torch.Tensor:
    return to_pixels(model, start, sample_with_direction(model, start, direction, strength)).cpu()


def bench_directions(
    model_name: str, device: torch.device, method: str = "rbe", count: int = 50, strength: float = 30.0,
    dilation: int = 3, max_iterations: int = 50, probe=None, size: int | None = None,
    progress_file: str | Path | None = None, split: str = "benchmark",
    complement_rank: int = rbe.DEFAULT_COMPLEMENT_RANK, timestep: int = DEFAULT_TIMESTEP,
) -> dict:
    """Locality, factors moved and transfer of the top directions found on toy faces of ``split``
    (``validation`` to choose settings such as the strength; figures are reported on the benchmark).

    ``progress_file``: one JSON line per finished face (after a line of settings); a run that finds
    the file with the same settings continues after its last face, so an interrupted hour is not lost.
    ``complement_rank`` (RBE's r) and ``timestep`` (where the directions are found and applied from)
    are the settings a validation sweep chooses."""
    model = _model(model_name, device)
    size = size or model.native_resolution
    net = probe or probes.load_probe("faces")
    settings = {"model": model_name, "method": method, "count": count, "strength": strength, "dilation": dilation,
                "max_iterations": max_iterations, "size": size, "split": split, "timestep": timestep,
                "factor_reading": FACTOR_READING, **({"complement_rank": complement_rank} if method == "rbe" else {})}
    done = _read_progress(progress_file, settings)
    faces = faces_world.generate_faces(split_seeds(split, count + 1), size=size)
    regions = {"eyes": face_part_mask("eyes", (size, size)), "mouth": face_part_mask("mouth", (size, size))}
    allowed = dilate(regions["eyes"], dilation) if method == "rbe" else dilate(torch.clamp(regions["eyes"] + regions["mouth"], 0, 1), dilation)
    grown = {name: dilate(region, dilation) for name, region in regions.items()}

    def find(start: EditStart):
        if method == "rbe":
            return rbe.discover(model, start, regions["eyes"], complement_rank=complement_rank, max_iterations=max_iterations)
        return jica.discover(model, start, [regions["eyes"], regions["mouth"]], region_names=["eyes", "mouth"],
                             max_iterations=max_iterations)

    def top3(directions):  # RBE: the three strongest; JICA: the first individual direction of each region + joint 0
        if method == "rbe":
            return list(range(min(3, len(directions))))
        return [directions.labels.index(label) for label in ("individual eyes 0", "individual mouth 0", "joint 0")]

    def _transfer(direction: torch.Tensor, face: torch.Tensor) -> float:
        start = start_from_image(model, face, timestep)
        return _energy_inside(_edit(model, start, direction, strength) - _edit(model, start, None, 0.0), allowed)

    def measure(i: int, transferred: torch.Tensor) -> dict:
        """Face i: its own top directions (locality, factors moved, own/other), face 0's top direction on
        it, and its top direction on face i - 1 (a transfer figure over ``count`` sources, not one)."""
        began = time.perf_counter()
        start = start_from_image(model, faces.images[i : i + 1], timestep)
        directions = find(start)
        reference = _edit(model, start, None, 0.0)
        record = {"face": i, "moved": []}
        for rank, index in enumerate(top3(directions)):
            edited = _edit(model, start, directions.vectors[index], strength)
            change = edited - reference
            moves = _factor_moves(net, reference, edited)
            if rank == 0:
                record["locality"] = _energy_inside(change, allowed)
                record["single"] = _moves_exactly_one(moves)
                record["single_counting_hidden"] = _moves_exactly_one(_factor_moves(net, reference, edited, hidden_too=True))
                record["moves"] = {name: round(move, 4) for name, move in moves.items()}
            if method == "jica" and rank < 2:  # the individual eyes, then mouth direction
                own, other = ("eyes", "mouth") if rank == 0 else ("mouth", "eyes")
                record.setdefault("own_over_other", {})[own] = (
                    _energy_inside(change, grown[own]) / max(_energy_inside(change, grown[other]), 1e-12))
            label = directions.labels[index].rsplit(" ", 1)[0] if method == "jica" else f"direction {rank}"
            record["moved"].append([label, max(moves, key=moves.get)])
        record["transfer"] = _energy_inside(_edit(model, start, transferred, strength) - reference, allowed)
        record["transfer_to_previous_face"] = _transfer(directions.vectors[top3(directions)[0]], faces.images[i - 1 : i])
        record["seconds"] = time.perf_counter() - began
        return record

    began = time.perf_counter()
    source_directions = find(start_from_image(model, faces.images[:1], timestep))
    transferred = source_directions.vectors[top3(source_directions)[0]]
    records = list(done)
    for i in range(len(records) + 1, count + 1):
        records.append(measure(i, transferred))
        _append_progress(progress_file, settings, records[-1])
    if progress_file is not None:
        Path(progress_file).unlink(missing_ok=True)  # every face measured: the result holds the figures
    return {
        "benchmark": "directions", "split": split, "method": method, "model": model_name, "device": str(device), "count": count,
        "size": size, "strength": strength, "dilation": dilation, "max_iterations": max_iterations,
        "timestep": timestep, "factor_reading": FACTOR_READING,
        **({"complement_rank": complement_rank} if method == "rbe" else {}),
        "region": "eyes" if method == "rbe" else "eyes+mouth (individual eyes direction)",
        **summarise_directions(records, method),
        "seconds": round(time.perf_counter() - began + sum(r["seconds"] for r in done), 1),
        "resumed_after_faces": len(done), "machine": machine(),
    }


def summarise_directions(records: list[dict], method: str) -> dict:
    """The figures of ``bench_directions`` from its per-face records."""
    local = torch.tensor([r["locality"] for r in records])
    transferred = torch.tensor([r["transfer"] for r in records])
    moved = Counter(tuple(pair) for r in records for pair in r["moved"])
    summary = {
        "mean_energy_inside": round(float(local.mean()), 4),
        "share_faces_at_least_90pct_inside": round(float((local >= 0.9).float().mean()), 4),
        "factors_moved": {f"{k[0]} → {k[1]}": v for k, v in sorted(moved.items())},
        "move_threshold": MOVE_THRESHOLD,
        "share_top_direction_moves_exactly_one_factor": round(sum(r["single"] for r in records) / max(1, len(records)), 4),
    }
    if all("single_counting_hidden" in r for r in records):  # progress files before 2026-12-04 lack it
        summary["share_exactly_one_factor_counting_hidden_factors"] = round(
            sum(r["single_counting_hidden"] for r in records) / max(1, len(records)), 4)
    if method == "jica":
        ratios = {name: torch.tensor([r["own_over_other"][name] for r in records]) for name in ("eyes", "mouth")}
        summary["individual_own_over_other_region"] = {
            name: {"median": round(float(values.median()), 3), "share_at_least_5x": round(float((values >= 5).float().mean()), 4)}
            for name, values in ratios.items()}
    summary["transfer_mean_energy_inside"] = round(float(transferred.mean()), 4)
    summary["transfer_success"] = round(float((transferred >= 0.9).float().mean()), 4)
    if all("transfer_to_previous_face" in r for r in records):  # progress files before 2026-12-04 lack it
        ring = torch.tensor([r["transfer_to_previous_face"] for r in records])
        summary["transfer_to_previous_face_mean_energy_inside"] = round(float(ring.mean()), 4)
        summary["transfer_to_previous_face_success"] = round(float((ring >= 0.9).float().mean()), 4)
    return summary


# what a progress file written before a setting was named had run with (RBE's r was 8 until 2026-12-03;
# hidden factors counted as moved until 2026-12-04)
IMPLIED_SETTINGS = {"split": "benchmark", "timestep": DEFAULT_TIMESTEP, "factor_reading": "hidden factors too"}
IMPLIED_RBE_SETTINGS = {"complement_rank": 8}


def _with_implied_settings(stored: dict) -> dict:
    implied = {**IMPLIED_SETTINGS, **(IMPLIED_RBE_SETTINGS if stored.get("method") == "rbe" else {})}
    return {**implied, **stored}


def _read_progress(path: str | Path | None, settings: dict) -> list[dict]:
    """The faces already measured with these settings (none without a file). The file is rewritten
    with what was read, so a line torn by an interruption is dropped before anything is appended."""
    if path is None or not Path(path).exists():
        return []
    lines = Path(path).read_text().splitlines()
    try:
        header = json.loads(lines[0]) if lines else {"settings": settings}
    except json.JSONDecodeError:
        header = None
    if isinstance(header, dict) and isinstance(header.get("settings"), dict):
        header = {"settings": _with_implied_settings(header["settings"])}
    if header != {"settings": settings}:
        raise RegionEditError(f"{path} holds faces measured with other settings ({header}): "
                              "use the same settings or remove the file")
    records = []
    for line in lines[1 : settings["count"] + 1]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if record.get("face") != len(records) + 1:
            break
        records.append(record)
    text = "".join(json.dumps(line) + "\n" for line in [{"settings": settings}, *records])
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))
    return records


def _append_progress(path: str | Path | None, settings: dict, record: dict) -> None:
    if path is None:
        return
    path = Path(path)
    with path.open("a") as file:
        if file.tell() == 0:
            file.write(json.dumps({"settings": settings}) + "\n")
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())
