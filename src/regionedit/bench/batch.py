"""`regionedit bench batch`: items per second of `regionedit batch` with 1 and with N processes.

Each run is a real `accelerate launch --cpu --num_processes P` of the batch command on the same
manifest of ZONE edits (tiny models unless told otherwise), with the machine's cores split evenly
between the processes. Wall time includes process start-up and model loading; ``steady`` counts
only the span between the first and the last finished item.
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
from regionedit.images import save_png, tensor_to_pil
from regionedit.toyworld.scenes import generate_edits
from regionedit.toyworld.splits import split_seeds


def write_zone_manifest(folder: Path, count: int, model: str, steps: int) -> Path:
    edits = generate_edits(split_seeds("validation", count))
    lines = []
    for i in range(count):
        save_png(tensor_to_pil(edits.source.images[i] * 2 - 1), folder / f"scene{i:03d}.png")
        lines.append(json.dumps({"id": f"item{i:03d}", "method": "zone", "image": f"scene{i:03d}.png",
                                 "instruction": edits.instruction[i], "model": model, "seed": i,
                                 "params": {"num_inference_steps": steps}}))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def launch(manifest: Path, out: Path, processes: int, threads: int, batch_size: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    several = ["--multi_gpu"] if processes > 1 else []  # what makes accelerate start N processes, GPU or not
    command = [sys.executable, "-m", "accelerate.commands.launch", *several, "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "regionedit.cli",
               "batch", str(manifest), "--out", str(out), "--batch-size", str(batch_size), "-q"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def steady_seconds(out: Path) -> float:
    times = [json.loads(line)["time"] for log in (out / "logs").glob("*.jsonl") for line in log.read_text().splitlines()]
    return max(times) - min(times) if len(times) > 1 else float("nan")


def bench_batch(processes: tuple[int, ...] = (1, 2), count: int = 32, model: str = "tiny/ip2p", steps: int = 20,
                batch_size: int = 4) -> dict:
    cores = os.cpu_count() or 1
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = write_zone_manifest(folder, count, model, steps)
        for p in processes:
            out = folder / f"out-{p}"
            seconds = launch(manifest, out, p, max(1, cores // p), batch_size)
            steady = steady_seconds(out)
            runs[str(p)] = {"wall_s": round(seconds, 2), "items_per_s": round(count / seconds, 3),
                            "steady_s": round(steady, 2), "steady_items_per_s": round(count / steady, 3) if steady else None,
                            "threads_per_process": max(1, cores // p)}
    first = runs[str(processes[0])]
    for p in processes[1:]:
        runs[str(p)]["speedup_over_1"] = round(runs[str(p)]["items_per_s"] / first["items_per_s"], 3)
    return {"benchmark": "batch", "model": model, "method": "zone", "count": count, "steps": steps,
            "batch_size": batch_size, "processes": runs, "machine": machine()}
