"""ZONE: zero-shot instruction-guided local editing (Li et al., CVPR 2024).

Algorithm:
1. Action: change / add / remove from the instruction (MLP on the text embedding; keyword rule where
   no classifier is given or it is unsure; a classifier trained for another model is refused).
2. Fused instruct models: both denoise from the same latent with three-branch guidance (text 7.5,
   image 1.5, 20 steps); after every step z = (z_1 + β z_2)/(1+β), β = 0.2 for remove, 0.01 else.
3. Localise: the first instruct model's cross-attention maps, averaged over heads and all steps at
   the layers 1/32 of the image size; first-token map minus last-token map, scaled to 0..255,
   M_b = (difference < T), T = 128 (the attention to the start token drops where the edit happens).
4. Refine: segment everything in the edited image (the original for remove); keep the segment with
   the highest Region-IoU with M_b → M_f.
5. Blend: dilate M_f → M_d; FFT edge smoother (ideal low-pass of radius D0 = 200 at 512², scaled
   with the image) of the edited minus the original image inside M_d, binarised, closed, holes
   filled → M*; the edited layer (RGBA, alpha M*) over the original. Outside M* the output is the
   input, exactly.
Every fallback (unsure classifier, empty attention mask, no overlapping segment, no visible change)
keeps going with the coarser mask and is written into the recipe's notes.

Where we differ: the map size is a fraction of the image side, 1/32 as in the paper (16² maps at
512²) for every model except the embedded toy ones, whose 64² scenes are read at 1/8 (their 8²
layers): the toy UNet has no 2² layer, and on the validation split its coarsest (4²) maps missed
the edited object where the 8² maps found it (`attention_fraction` to choose; see the README).
For the toy models the coarse mask M_b comes from the edit itself, not the attention
(``localisation="change"``: mean |edited − original| over RGB > 0.05): the toy instruct model's
first-minus-last-token maps carry the sky/ground layout and miss removed objects (validation split,
100 edits: removals 0.14 with the attention vs 0.97 with the change map, mask IoU 0.46 vs 0.66;
bench/results/zone-localisation-validation-cpu.json). Real InstructPix2Pix retouches the whole
image, which is why the paper reads the attention; hub models keep it.
For the toy models the final mask also keeps the whole refined segment (``keep_segment``:
M* ∪ M_f): where an edit leaves the inside of an object as it was (a brown box into a brown star,
a white ball into a white box) the smoother's binarised change is a ring with gaps that hole filling
cannot close, and the composite kept pieces of the old object (validation split, 100 edits: final-mask
IoU 0.665 → 0.678, object changes 0.670 → 0.702, at equal success and background L1 0.0037 → 0.0039;
bench/results/zone-keep-segment-validation-cpu.json). Hub models keep the paper's M*. A limit on the
kept segment's size (``keep_segment_limit``: at most L times M*'s area) is off by default: on the
toy models it cost the ring-shaped changes it exists for (zone-keep-segment-limit-validation-cpu.json).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from regionedit import __version__, checks, defaults
from regionedit.core.attention import CrossAttentionRecorder, layers_at_resolution
from regionedit.core.sampling import gaussian_noise
from regionedit.core.schedule import Schedule
from regionedit.errors import RegionEditError
from regionedit.images import from_model_range, unit_to_pil
from regionedit.mask_sources import MaskResult, resolve_source
from regionedit.masks import dilate, fft_edge_smoother, resize, select_by_region_iou
from regionedit.methods.actions import ActionClassifier, ActionDecision, decide_action
from regionedit.models.backend import DiffusionModel
from regionedit.segment_everything import ClassicalSegmenter

DEFAULT_STEPS = defaults.ZONE_STEPS
DEFAULT_TEXT_GUIDANCE = defaults.ZONE_TEXT_GUIDANCE
DEFAULT_IMAGE_GUIDANCE = defaults.ZONE_IMAGE_GUIDANCE
BETA = defaults.ZONE_BETA
DEFAULT_THRESHOLD = defaults.ZONE_THRESHOLD
DEFAULT_LOCALISATION = defaults.ZONE_LOCALISATION
DEFAULT_CHANGE_THRESHOLD = defaults.ZONE_CHANGE_THRESHOLD
LOCALISATIONS = ("attention", "change")
DEFAULT_SMOOTHER_THRESHOLD = defaults.ZONE_SMOOTHER_THRESHOLD
DEFAULT_KEEP_SEGMENT_LIMIT = defaults.ZONE_KEEP_SEGMENT_LIMIT
DEFAULT_ATTENTION_FRACTION = defaults.ZONE_ATTENTION_FRACTION
DEFAULT_ETA = defaults.ZONE_ETA
# Per model family, chosen on the validation split (toy scenes are 64², objects a few cells of 8²).
ATTENTION_FRACTION = {"toy/": 1 / 8}


# "change" for the embedded toy models: chosen on the validation split (bench/results/zone-localisation-validation-cpu.json).
LOCALISATION = {"toy/": "change"}
# M* ∪ M_f for the embedded toy models: chosen on the validation split (bench/results/zone-keep-segment-validation-cpu.json).
KEEP_SEGMENT = {"toy/": True}


def _by_family(table: dict, model_name: str, default):
    """The setting ``table`` gives the model's family (the first prefix it starts with), else ``default``."""
    return next((value for prefix, value in table.items() if model_name.startswith(prefix)), default)


def localisation_for(model_name: str) -> str:
    """Where ZONE's coarse mask comes from for this model: the paper's attention maps, or the edit itself."""
    return _by_family(LOCALISATION, model_name, DEFAULT_LOCALISATION)


def keeps_segment(model_name: str) -> bool:
    """Whether ZONE's final mask keeps the whole refined segment for this model (M* ∪ M_f), or is the
    paper's smoothed change alone."""
    return _by_family(KEEP_SEGMENT, model_name, defaults.ZONE_KEEP_SEGMENT)


def attention_fraction_for(model_name: str) -> float:
    """The map size (a fraction of the image side) ZONE reads for this model."""
    return _by_family(ATTENTION_FRACTION, model_name, DEFAULT_ATTENTION_FRACTION)


D0_AT_512 = defaults.ZONE_D0_AT_512
DILATION_AT_512 = defaults.ZONE_DILATION_AT_512  # our choice: the paper dilates without giving the size
MAX_PIXELS = 4096  # a larger dilation is a mistake (and costs time growing with its square)


PARTNERS = {"tiny/": "tiny/ip2p-b", "toy/": "toy/scenes-instruct-remove", "": "vinesmsuic/magicbrush-jul7"}


def partner_of(model_name: str) -> str | None:
    """The second instruct model fused by default: MagicBrush for hub models, the remove-tuned toy
    model for the toy one (None, i.e. a single model, where this installation does not ship it)."""
    partner = _by_family(PARTNERS, model_name, None)  # "" matches every hub model
    if partner.startswith("toy/"):
        from regionedit.models.loading import embedded_models

        return partner if partner in embedded_models() else None
    return partner


@dataclass
class ZoneOutput:
    image: Image.Image  # the final composite
    edited: Image.Image  # the instruct models' output before localisation
    layer: Image.Image  # RGBA: the edited pixels, alpha = the final mask
    coarse_mask: torch.Tensor  # 1×1×H×W: from the attention maps
    refined_mask: torch.Tensor  # 1×1×H×W: the Region-IoU segment
    final_mask: torch.Tensor  # 1×1×H×W: after the edge smoother
    action: ActionDecision
    recipe: dict
    timings: dict = field(default_factory=dict)
    pixels: torch.Tensor | None = None  # 1×3×H×W in [0, 1]: the composite before 8-bit rounding


def instruction_token_span(model: DiffusionModel, instruction: str) -> tuple[int, int]:
    """Indices of the start-of-text and end-of-text tokens of the instruction."""
    ids = model.tokenizer(instruction, truncation=True, max_length=model.tokenizer.model_max_length).input_ids
    return 0, len(ids) - 1


def coarse_mask_from_attention(maps: torch.Tensor, first: int, last: int, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """M_b: (first-token map − last-token map), resized, scaled to 0..255, below the threshold."""
    difference = (maps[:, first] - maps[:, last]).unsqueeze(1)
    difference = F.interpolate(difference, size=size, mode="bilinear", align_corners=False)
    low, high = difference.amin(), difference.amax()
    if high - low <= 1e-12:
        return torch.zeros_like(difference)
    return ((difference - low) / (high - low) * 255 < threshold).float()


def coarse_mask_from_change(edited: torch.Tensor, original: torch.Tensor, threshold: float) -> torch.Tensor:
    """M_b from the edit itself: where the instruct models' output differs from the input by more
    than ``threshold`` (mean absolute difference over RGB, images in [0, 1])."""
    return ((edited - original).abs().mean(1, keepdim=True) > threshold).float()


def fused_sampling(first: DiffusionModel, second: DiffusionModel | None, instructions: list[str], pixels: torch.Tensor,
                   beta: torch.Tensor, steps: int, text_guidance: float, image_guidance: float, eta: float,
                   seeds: list[int], recorder_layers: list[str] | None, progress: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample both instruct models from one latent per image (a batch of B), fusing after every step
    with β per image; record the first model's attention. Image i's noise comes from ``seeds[i]``
    alone, so an image gives the same result in any batch."""
    from tqdm.auto import tqdm

    schedule = Schedule.from_scheduler(first.scheduler, steps)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    latent_size = first.encode_source_image(pixels[:1]).shape[-2:]
    x = torch.cat([torch.randn(1, first.channels, *latent_size, generator=g) for g in generators]).to(first.device)
    noises = [gaussian_noise(schedule, eta, g) for g in generators]
    denoisers = [m.denoiser(list(instructions), text_guidance, source_image=pixels, image_guidance_scale=image_guidance)
                 for m in (first, second) if m is not None]
    beta = beta.to(first.device).view(-1, 1, 1, 1)
    recorder = CrossAttentionRecorder(first.unet, recorder_layers or [], tuple(latent_size), branch=0, branches=3)
    with recorder if recorder_layers else contextlib.nullcontext(), torch.no_grad():
        for i in tqdm(range(len(schedule)), disable=not progress, desc="zone", leave=False):
            t = schedule.timesteps[i]
            means = [schedule.mean(i, x, d(x, t), eta) for d in denoisers]
            mean = means[0] if len(means) == 1 else (means[0] + beta * means[1]) / (1 + beta)
            x = mean + torch.cat([noise(i, x[j : j + 1]) for j, noise in enumerate(noises)])
    maps = recorder.maps() if recorder_layers else None
    return x, maps


def edit(model: DiffusionModel, image, instruction: str, mask=None, **options) -> ZoneOutput:
    """Apply ``instruction`` locally: only the pixels of the final mask change (see :func:`edit_many`;
    ``mask``: a user region replacing the attention localisation)."""
    seed = options.pop("seed", 0)
    return edit_many(model, [image], [instruction], seeds=[seed], masks=None if mask is None else [mask], **options)[0]


def edit_many(
    model: DiffusionModel,
    images: list,
    instructions: list[str],
    second_model: DiffusionModel | None = None,
    classifier: ActionClassifier | None = None,
    segmenter=None,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_TEXT_GUIDANCE,
    image_guidance_scale: float = DEFAULT_IMAGE_GUIDANCE,
    beta: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    localisation: str | None = None,
    change_threshold: float = DEFAULT_CHANGE_THRESHOLD,
    attention_layers: list[str] | None = None,
    attention_fraction: float | None = None,
    union_above: float | None = None,
    dilation: int | None = None,
    d0: float | None = None,
    smoother_threshold: float = DEFAULT_SMOOTHER_THRESHOLD,
    keep_segment: bool | None = None,
    keep_segment_limit: float | None = DEFAULT_KEEP_SEGMENT_LIMIT,
    eta: float = DEFAULT_ETA,
    seeds: list[int] | None = None,
    max_side: int | None = None,
    masks: list | None = None,
    progress: bool = True,
) -> list[ZoneOutput]:
    """ZONE for several images of one size at once: one batched sampling run, then each image's
    localisation, refinement and blending.

    ``masks``: one user region per image (a tensor at the input's size or any mask source of
    :mod:`regionedit.mask_sources`, resolved on the image; None for ZONE's own) that replaces the
    coarse attention mask M_b; refinement by Region-IoU and the edge smoother follow as usual.
    ``keep_segment``: the final mask also keeps the whole refined segment (M* ∪ M_f); default by model
    family (:func:`keeps_segment`). ``keep_segment_limit``: keep it only when its area is at most this
    many times M*'s (a much larger segment was chosen wrongly and would be pasted whole); None: always."""
    if not model.is_instruct:
        raise RegionEditError(f"ZONE needs an instruct model (InstructPix2Pix-style); {model.name} is not one")
    if second_model is not None and (not second_model.is_instruct or second_model.channels != model.channels):
        raise RegionEditError(f"the second model {second_model.name} must be an instruct model of the same latent space")
    if len(images) != len(instructions) or not images:
        raise RegionEditError(f"ZONE needs one instruction per image: {len(images)} images, {len(instructions)} instructions")
    for instruction in instructions:
        if not isinstance(instruction, str) or not instruction.strip():
            raise RegionEditError("the instruction is empty: say what to change, add or remove")
    seeds = [checks.seed(s) for s in seeds] if seeds is not None else [0] * len(images)
    checks.integer("num_inference_steps", num_inference_steps, 1)
    threshold, eta = checks.number("threshold", threshold, 0, 255), checks.number("eta", eta, 0, 1)
    change_threshold = checks.number("change_threshold", change_threshold, 0, 1)
    localisation = localisation or localisation_for(model.name)
    if localisation not in LOCALISATIONS:
        raise RegionEditError(f"unknown ZONE localisation {localisation!r}: choose one of {', '.join(LOCALISATIONS)}")
    beta, union_above = checks.optional_number("beta", beta, 0, 1), checks.optional_number("union_above", union_above, 0, 1)
    dilation, d0 = checks.optional_integer("dilation", dilation, 0, MAX_PIXELS), checks.optional_number("d0", d0, 0)
    smoother_threshold = checks.number("smoother_threshold", smoother_threshold, 0, 1)
    if keep_segment is None:
        keep_segment = keeps_segment(model.name)
    elif not isinstance(keep_segment, bool):
        raise RegionEditError(f"keep_segment must be true or false, got {keep_segment!r}")
    keep_segment_limit = checks.optional_number("keep_segment_limit", keep_segment_limit, 1)
    if masks is not None and len(masks) != len(images):
        raise RegionEditError(f"ZONE needs one mask (or None) per image: {len(images)} images, {len(masks)} masks")
    given = [None if m is None else resolve_source(m, image, model, "ZONE")
             for m, image in zip(masks or [None] * len(images), images, strict=True)]
    began = time.perf_counter()
    decisions = [decide_action(model, text, classifier) for text in instructions]
    betas = [BETA[d.action] if beta is None else beta for d in decisions]
    fitted = [model.fit_image(image, max_side) for image in images]
    fit = fitted[0][1]
    if any(f.padded_size != fit.padded_size or f.working_size != fit.working_size for _, f in fitted):
        raise RegionEditError("ZONE batches need images of one size; edit the others separately")
    pixels = torch.cat([p for p, _ in fitted])
    padded = (fit.padded_size[1], fit.padded_size[0])
    latent = model.encode_source_image(pixels[:1]).shape[-2:]
    fraction = attention_fraction if attention_fraction is not None else attention_fraction_for(model.name)
    if not 0 < fraction <= 1:
        raise RegionEditError(f"attention_fraction must be in (0, 1], got {fraction}")
    layers = attention_layers or layers_at_resolution(model.unet, tuple(latent), padded, fraction)
    # attention is recorded only where a coarse mask comes from it
    record = layers if localisation == "attention" and any(g is None for g in given) else None
    started = time.perf_counter()
    sample, maps = fused_sampling(model, second_model, instructions, pixels, torch.tensor(betas), num_inference_steps,
                                  guidance_scale, image_guidance_scale, eta, seeds, record, progress)
    edited = from_model_range(fit.crop(model.decode(sample)))
    if not torch.isfinite(edited).all():
        raise RegionEditError("the instruct models produced NaN or infinite values: lower the guidance scales")
    original = from_model_range(fit.crop(pixels))
    shared = {"sampling_s": (time.perf_counter() - started) / len(images), "setup_s": (started - began) / len(images)}
    settings = dict(threshold=threshold, localisation=localisation, change_threshold=change_threshold, union_above=union_above, dilation=dilation, d0=d0,
                    smoother_threshold=smoother_threshold, keep_segment=keep_segment,
                    keep_segment_limit=keep_segment_limit, padded=padded)
    outputs = []
    for i, (instruction, decision) in enumerate(zip(instructions, decisions, strict=True)):
        output = _localise_and_blend(model, instruction, decision, edited[i : i + 1].cpu(), original[i : i + 1].cpu(),
                                     None if maps is None else maps[i : i + 1], segmenter, settings, given[i])
        output.timings = {k: round(v, 4) for k, v in {**shared, **output.timings}.items()}
        output.timings["total_s"] = round(sum(v for k, v in output.timings.items() if k != "total_s"), 4)
        output.recipe.update({
            "second_model": second_model.name if second_model is not None else None,
            "beta": betas[i] if second_model is not None else None, "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale, "image_guidance_scale": image_guidance_scale,
            "attention_layers": layers, "eta": eta, "seed": seeds[i], "batch": len(images),
        })
        outputs.append(output)
    return outputs


def _localise_and_blend(model: DiffusionModel, instruction: str, decision: ActionDecision, edited: torch.Tensor,
                        original: torch.Tensor, maps: torch.Tensor | None, segmenter, settings: dict,
                        given: MaskResult | None = None) -> ZoneOutput:
    """Steps 3–5 for one image: coarse mask (or the ``given`` user region), Region-IoU segment,
    edge smoother and compositing."""
    notes = [] if decision.source == "classifier" else [f"action '{decision.action}' from {decision.source}"]
    timings: dict[str, float] = {}
    size = tuple(edited.shape[-2:])
    started = time.perf_counter()
    if given is not None:
        coarse = resize(given.mask.float().cpu(), size)
        notes += given.notes + [f"coarse mask from {given.source} instead of the attention maps"]
    elif settings["localisation"] == "change":
        coarse = coarse_mask_from_change(edited, original, settings["change_threshold"])
    else:
        first, last = instruction_token_span(model, instruction)
        coarse = coarse_mask_from_attention(maps, first, last, settings["padded"], settings["threshold"])
        coarse = coarse[..., : size[0], : size[1]].cpu()
    timings["attention_s"] = time.perf_counter() - started

    started = time.perf_counter()
    segments = (segmenter or ClassicalSegmenter())(original if decision.action == "remove" else edited)
    if coarse.sum() == 0:
        notes.append("the attention selected nothing: the coarse mask falls back to the whole image")
        coarse = torch.ones_like(coarse)
    refined, best_iou = select_by_region_iou(segments, coarse[0, 0], settings["union_above"])
    refined = refined.float().view(1, 1, *size)
    if best_iou == 0:
        notes.append("no segment overlaps the coarse mask: refined mask = coarse mask")
        refined = coarse.clone()
    timings["segmentation_s"] = time.perf_counter() - started

    started = time.perf_counter()
    scale = max(size) / 512
    radius = D0_AT_512 * scale if settings["d0"] is None else settings["d0"]
    grow = max(1, round(DILATION_AT_512 * scale)) if settings["dilation"] is None else settings["dilation"]
    final = fft_edge_smoother(edited, original, dilate(refined, grow), radius, settings["smoother_threshold"],
                              closing=max(1, grow // 2))
    limit = settings["keep_segment_limit"]
    if settings["keep_segment"] and (limit is None or refined.sum() <= limit * final.sum()):
        final = torch.maximum(final, refined)
    if final.sum() == 0:
        notes.append("the edit changed nothing visible inside the dilated mask: final mask = refined mask")
        final = refined.clone()
    composite = final * edited + (1 - final) * original
    layer = torch.cat([edited, final], dim=1)[0]
    timings["blending_s"] = time.perf_counter() - started
    recipe = {
        "method": "zone", "version": __version__, "model": model.name, "instruction": instruction,
        "action": decision.action, "action_source": decision.source, "action_confidence": decision.confidence,
        "localisation": settings["localisation"] if given is None else None,
        "threshold": settings["threshold"], "change_threshold": settings["change_threshold"], "segmenter": getattr(segmenter, "name", "classical"),
        "region_iou": round(best_iou, 4), "union_above": settings["union_above"], "dilation": grow, "d0": radius,
        "smoother_threshold": settings["smoother_threshold"], "keep_segment": settings["keep_segment"],
        "keep_segment_limit": settings["keep_segment_limit"], "notes": notes,
        "mask_source": given.source if given is not None else None,
    }
    return ZoneOutput(
        image=unit_to_pil(composite[0]), edited=unit_to_pil(edited[0]), pixels=composite,
        layer=Image.fromarray((layer.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy(), mode="RGBA"),
        coarse_mask=coarse, refined_mask=refined, final_mask=final, action=decision, recipe=recipe, timings=timings,
    )
