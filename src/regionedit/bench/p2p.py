"""`regionedit bench p2p`: the cost of Prompt-to-Prompt over the plain edit-friendly edit, and diversity.

All in one run on the same model, image, inversion, steps, skip and target CFG (the P2P
variant's defaults: skip 12, CFG 3.5 → 9): the plain edit-friendly edit; P2P (attention
replace/refine, self-attention injection) with the source branch read from the inversion and its
attention recorded by the inversion (what the editor does); the same without the record (the
source's text row computed while needed); each with local blending; P2P with the released code's
sampled 4-row source branch. The inversion is timed with and without the record. Each is timed as
the best of ``repeats`` interleaved runs after a warm-up; UNet calls per edit are counted.

Diversity: ``samples`` independent noise-map draws of the same image (re-inversions with seeds
0, 1, …) edited with the same prompt; the mean pairwise L1 between the edits inside the toy
edit's region and outside it (:func:`diversity`).
"""

from __future__ import annotations

from itertools import combinations

import torch

from regionedit.bench import machine, timed
from regionedit.bench.inversion import bench_model
from regionedit.core.inversion import invert
from regionedit.images import pil_to_tensor
from regionedit.methods import ddpm_edit, p2p
from regionedit.metrics import l1
from regionedit.toyworld.scenes import generate_edits
from regionedit.toyworld.splits import split_seeds


def diversity(images: list[torch.Tensor], mask: torch.Tensor) -> dict:
    """Mean pairwise L1 (images in [0, 1], 1×3×H×W) inside and outside ``mask`` (1×1×H×W, 1 = edited)."""
    pairs = list(combinations(images, 2))
    inside = sum(float(l1(a, b, mask, "inside")) for a, b in pairs) / len(pairs)
    outside = sum(float(l1(a, b, mask, "outside")) for a, b in pairs) / len(pairs)
    return {"pairs": len(pairs), "l1_inside": round(inside, 5), "l1_outside": round(outside, 5),
            "inside_over_outside": round(inside / outside, 3) if outside > 0 else None}


def _unit(image) -> torch.Tensor:
    return (pil_to_tensor(image) + 1) / 2


def bench_p2p(model_name: str, device: torch.device, dtype: torch.dtype | None = None, steps: int = 100,
              skip: int = p2p.DEFAULT_SKIP, guidance_scale: float = p2p.DEFAULT_TARGET_GUIDANCE,
              repeats: int = 3, samples: int = 3) -> dict:
    model = bench_model(model_name, device, dtype)
    size = model.native_resolution
    edits = generate_edits(split_seeds("validation", 1), size=size, actions=["change_colour"])
    source, target = edits.source_caption[0], edits.target_caption[0]
    word = edits.target_object[0].split()[-1]  # "a blue box" → "box": in both captions
    image, mask = edits.source.images, edits.mask
    def inverted(record: bool):
        return invert(model, image, prompt=source, num_inference_steps=steps, seed=0, progress=False, record_attention=record)

    inversions = {False: inverted(False), True: inverted(True)}  # warm-up
    inversion_times = {False: [], True: []}
    for _ in range(repeats):
        for record in (False, True):
            inversion_times[record].append(timed(lambda record=record: inverted(record), device)[0])
    inversion_s, recording_inversion_s = min(inversion_times[False]), min(inversion_times[True])
    inversion, recorded = inversions[False], inversions[True]

    runs = {  # label: (edit, the inversion it edits)
        "plain": (lambda inv: ddpm_edit.edit(model, inv, target, guidance_scale, skip, progress=False), inversion),
        "p2p": (lambda inv: p2p.edit(model, inv, target, guidance_scale, skip, progress=False), recorded),
        "p2p_blend": (lambda inv: p2p.edit(model, inv, target, guidance_scale, skip, blend_words=[word], progress=False),
                      recorded),
        # a given region (a text, user or GT mask: where it comes from costs nothing here) instead of words
        "p2p_blend_mask": (lambda inv: p2p.edit(model, inv, target, guidance_scale, skip, blend_mask=mask, progress=False),
                           recorded),
        "p2p_computed_source": (lambda inv: p2p.edit(model, inv, target, guidance_scale, skip, progress=False), inversion),
        "p2p_blend_computed_source": (lambda inv: p2p.edit(model, inv, target, guidance_scale, skip, blend_words=[word],
                                                           progress=False), inversion),
        "p2p_sampled_source": (lambda inv: p2p.edit(model, inv, target, guidance_scale, skip, source_branch="sampled",
                                                    progress=False), inversion),
    }
    calls = [0]
    hook = model.unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    unet_calls, outputs = {}, {}
    try:
        for label, (run, inv) in runs.items():
            calls[0] = 0
            outputs[label] = run(inv)  # warm-up; counts the UNet calls
            unet_calls[label] = calls[0]
    finally:
        hook.remove()
    measured = {label: [] for label in runs}
    for _ in range(repeats):  # interleaved, so that a slow spell of the machine hits every edit alike
        for label, (run, inv) in runs.items():
            measured[label].append(timed(lambda run=run, inv=inv: run(inv), device)[0])
    timings = {label: min(seconds) for label, seconds in measured.items()}

    draws = ddpm_edit.redraws(model, inversion, samples)
    spread = {label: diversity([_unit(runs[label][0](draw).image) for draw in draws], mask)
              for label in ("plain", "p2p_blend")}
    plain = timings["plain"]
    return {
        "benchmark": "p2p", "model": model_name, "model_info": model.describe(), "device": str(device),
        "dtype": str(model.dtype).replace("torch.", ""), "size": size, "steps": steps, "skip": skip,
        "source_guidance_scale": inversion.guidance_scale, "target_guidance_scale": guidance_scale,
        "cross_replace": p2p.DEFAULT_CROSS_REPLACE, "self_replace": p2p.DEFAULT_SELF_REPLACE,
        "source_prompt": source, "target_prompt": target, "blend_word": word, "mode": outputs["p2p"].mode,
        "repeats": repeats, "times_s": {k: [round(v, 4) for v in vs] for k, vs in measured.items()},
        "inversion_s": round(inversion_s, 4), "recording_inversion_s": round(recording_inversion_s, 4),
        "recording_inversion_over_inversion": round(recording_inversion_s / inversion_s, 3),
        "recorded_attention_mb": round(recorded.source_attention.megabytes, 2) if recorded.source_attention else None,
        "inversion_times_s": {("recording" if k else "plain"): [round(v, 4) for v in vs] for k, vs in inversion_times.items()},
        **{f"{label}_s": round(seconds, 4) for label, seconds in timings.items()},
        **{f"{label}_over_plain": round(seconds / plain, 3) for label, seconds in timings.items() if label != "plain"},
        "p2p_over_plain_with_inversion": round((recording_inversion_s + timings["p2p"]) / (inversion_s + plain), 3),
        "p2p_recorded_vs_computed_max_abs_diff": (outputs["p2p"].sample - outputs["p2p_computed_source"].sample).abs().max().item(),
        "unet_calls": unet_calls, "edited_steps": steps - skip,
        "source_recon_max_abs_err_sampled": (outputs["p2p_sampled_source"].source_sample - inversion.x0).abs().max().item(),
        "blend_mask_fraction": round(float(outputs["p2p_blend"].blend_mask.mean()), 4),
        "diversity": {"samples": samples, "region": "the toy edit's ground-truth mask", **spread},
        "note": "plain: edit-friendly edit (rows [uncond, text]); p2p, p2p_blend and p2p_blend_mask (blending from the "
                "edit's GT mask): the source's attention recorded by "
                "the inversion (record_attention=True, what DDPMEditor does for P2P), rows [uncond tgt, text tgt]; "
                "*_computed_source: an inversion without the record, rows [uncond tgt, text src, text tgt] while an "
                "attention edit or blending needs the source, else [uncond tgt, text tgt]; p2p_sampled_source: the "
                "released code's [uncond src, uncond tgt, text src, text tgt] every step. *_over_plain: edits only "
                "(the inversion is shared); p2p_over_plain_with_inversion adds the recording inversion to P2P and the "
                "plain inversion to the plain edit.",
        "machine": machine(),
    }
