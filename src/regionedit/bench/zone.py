"""`regionedit bench zone`: seconds per ZONE edit with a breakdown, and the plain instruct model.

``--tiny``: two tiny random InstructPix2Pix UNets and the classical segmenter, 64², on the CPU.
Default: random weights of the real sizes — two SD-1.5 instruct UNets (8 input channels), SD's VAE
and CLIP-L text encoder, SAM ViT-H — at 512², 20 steps: the GPU figure of issue 7.
"""

from __future__ import annotations

import torch

from regionedit.bench import machine, timed
from regionedit.methods import zone
from regionedit.models import DiffusionModel, load_model
from regionedit.models.tiny import sd15_sized_random
from regionedit.segment_everything import ClassicalSegmenter, SamSegmenter
from regionedit.toyworld.scenes import generate_edits
from regionedit.toyworld.splits import split_seeds


def sam_vit_h_random(seed: int = 0):
    from transformers import SamConfig, SamModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = SamConfig(vision_config=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                                              global_attn_indexes=[7, 15, 23, 31]))
        return SamModel(config).eval()


def bench_zone(tiny: bool, device: torch.device, steps: int = zone.DEFAULT_STEPS, repeats: int = 3) -> dict:
    if tiny:
        first, second = load_model("tiny/ip2p", device=device), load_model("tiny/ip2p-b", device=device)
        segmenter, size = ClassicalSegmenter(), 64
    else:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        first = DiffusionModel(**sd15_sized_random(0, in_channels=8), name="random/ip2p-sd15", device=device, dtype=dtype)
        second = DiffusionModel(**sd15_sized_random(1, in_channels=8), name="random/magicbrush-sd15", device=device, dtype=dtype)
        segmenter, size = SamSegmenter(sam_vit_h_random().to(device, dtype), name="sam:random/vit-h"), 512
    edits = generate_edits(split_seeds("validation", 1), size=size, actions=["change_colour"])
    image, instruction = edits.source.images, edits.instruction[0]

    def full():
        return zone.edit(first, image, instruction, second_model=second, segmenter=segmenter, num_inference_steps=steps,
                         progress=False)

    def plain():
        pixels, _ = first.fit_image(image)
        return first.decode(zone.fused_sampling(first, None, [instruction], pixels, torch.zeros(1), steps, zone.DEFAULT_TEXT_GUIDANCE,
                                                zone.DEFAULT_IMAGE_GUIDANCE, zone.DEFAULT_ETA,
                                                [0], None, False)[0])

    full()
    plain()
    runs = [timed(full, device) for _ in range(repeats)]
    best_seconds, best = min(runs, key=lambda r: r[0])
    plain_seconds = min(timed(plain, device)[0] for _ in range(repeats))
    return {
        "benchmark": "zone", "tiny": tiny, "device": str(device), "size": size, "steps": steps, "repeats": repeats,
        "models": [first.name, second.name], "segmenter": segmenter.name, "zone_s": round(best_seconds, 4),
        "breakdown_s": best.timings, "instruct_single_s": round(plain_seconds, 4),
        "zone_over_single_instruct": round(best_seconds / plain_seconds, 3), "machine": machine(),
    }
