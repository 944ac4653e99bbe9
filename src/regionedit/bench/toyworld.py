"""`regionedit bench toyworld`: rendering speed of the toy worlds on one CPU thread (and a GPU)."""

from __future__ import annotations

import time

import torch

from regionedit.bench import machine
from regionedit.toyworld.faces import generate_faces
from regionedit.toyworld.scenes import generate_scenes
from regionedit.toyworld.splits import split_seeds


def bench_rendering(count: int = 2000, size: int = 64, device: str = "cpu", threads: int = 1) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seeds = split_seeds("validation", count)
        result = {"benchmark": "toyworld", "count": count, "size": size, "device": device, "threads": threads}
        for world, generate in (("faces", generate_faces), ("scenes", generate_scenes)):
            generate(seeds[:64], size, device)  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            generate(seeds, size, device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            result[f"{world}_images_per_s"] = round(count / (time.perf_counter() - start), 1)
        result["machine"] = machine()
        return result
    finally:
        torch.set_num_threads(previous)
