"""`regionedit bench batch`: items per second of `regionedit batch` with 1 and with N processes.

Each run is a real `accelerate launch --num_processes P` of the batch command on the same manifest,
with the machine's cores split evenly between the processes: ZONE edits of toy scenes (tiny
instruct models unless told otherwise; batched ``--batch-size`` at a time) or RBE edits of toy faces
(the embedded ``toy/faces-ddpm`` by default; eye directions discovered once, before the timed runs,
then each item is a DDIM inversion to t = 500 and a sample back with the direction added). Wall
time includes process start-up and model loading; ``steady`` counts only the span between the first
and the last finished item (see `steady_rate`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from regionedit.bench import machine
from regionedit.images import save_png, unit_to_pil
from regionedit.toyworld.scenes import generate_edits
from regionedit.toyworld.splits import split_seeds


def write_zone_manifest(folder: Path, count: int, model: str, steps: int) -> Path:
    edits = generate_edits(split_seeds("validation", count))
    lines = []
    for i in range(count):
        save_png(unit_to_pil(edits.source.images[i]), folder / f"scene{i:03d}.png")
        lines.append(json.dumps({"id": f"item{i:03d}", "method": "zone", "image": f"scene{i:03d}.png",
                                 "instruction": edits.instruction[i], "model": model, "seed": i,
                                 "params": {"num_inference_steps": steps}}))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_rbe_manifest(folder: Path, count: int, model: str, iterations: int = 5) -> tuple[Path, dict]:
    """RBE edits of ``count`` validation faces along eye directions discovered on the first one."""
    from regionedit.masks import face_part_mask
    from regionedit.methods import rbe
    from regionedit.methods.hspace_edit import start_from_image
    from regionedit.models import load_model
    from regionedit.toyworld.faces import generate_faces

    diffusion = load_model(model, device="cpu")
    size = diffusion.native_resolution
    faces = generate_faces(split_seeds("validation", count), size=size).images
    directions = rbe.discover(diffusion, start_from_image(diffusion, faces[:1]), face_part_mask("eyes", (size, size)),
                              region_name="face:eyes", max_iterations=iterations)
    directions.save(folder / "eyes.safetensors")
    lines = []
    for i in range(count):
        save_png(unit_to_pil(faces[i]), folder / f"face{i:03d}.png")
        lines.append(json.dumps({"id": f"item{i:03d}", "method": "rbe", "image": f"face{i:03d}.png", "model": model,
                                 "directions": "eyes.safetensors", "index": i % 2, "strength": 30.0, "seed": i}))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    discovery = {"discovery_s": directions.report["seconds"], "discovery_iterations": iterations,
                 "timestep": directions.timestep, "num_inference_steps": directions.num_inference_steps}
    return path, discovery


def launch(manifest: Path, out: Path, processes: int, threads: int, batch_size: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    several = ["--multi_gpu"] if processes > 1 else []  # what makes accelerate start N processes, GPU or not
    command = [sys.executable, "-m", "accelerate.commands.launch", *several, "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "regionedit.cli",
               "batch", str(manifest), "--out", str(out), "--batch-size", str(batch_size), "-q"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def steady_rate(out: Path) -> tuple[float, float]:
    """(span, items per second) between the first and the last finished item: the items of the
    first finished group (committed within 50 ms of the first) open the span and are not counted."""
    times = sorted(json.loads(line)["time"] for log in (out / "logs").glob("*.jsonl") for line in log.read_text().splitlines())
    if len(times) < 2 or times[-1] - times[0] <= 0.05:
        return float("nan"), float("nan")
    span = times[-1] - times[0]
    return span, sum(t > times[0] + 0.05 for t in times) / span


def bench_batch(processes: tuple[int, ...] = (1, 2), count: int = 32, model: str | None = None, steps: int = 20,
                batch_size: int = 4, method: str = "zone") -> dict:
    """Items per second for each process count; ``steps`` and ``batch_size`` apply to ZONE."""
    if method not in ("zone", "rbe"):
        raise ValueError(f"method must be zone or rbe, got {method!r}")
    model = model or {"zone": "tiny/ip2p", "rbe": "toy/faces-ddpm"}[method]
    cores = os.cpu_count() or 1
    runs, setup = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if method == "zone":
            manifest = write_zone_manifest(folder, count, model, steps)
            setup = {"steps": steps, "batch_size": batch_size}
        else:
            manifest, setup = write_rbe_manifest(folder, count, model)
        for p in processes:
            out = folder / f"out-{p}"
            seconds = launch(manifest, out, p, max(1, cores // p), batch_size)
            steady, rate = steady_rate(out)
            runs[str(p)] = {"wall_s": round(seconds, 2), "items_per_s": round(count / seconds, 3),
                            "steady_s": round(steady, 2), "steady_items_per_s": round(rate, 3),
                            "threads_per_process": max(1, cores // p)}
    first = runs[str(processes[0])]
    for p in processes[1:]:
        runs[str(p)]["speedup_over_1"] = round(runs[str(p)]["items_per_s"] / first["items_per_s"], 3)
    return {"benchmark": "batch", "model": model, "method": method, "count": count, **setup,
            "processes": runs, "machine": machine()}
