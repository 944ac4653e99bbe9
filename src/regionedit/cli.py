"""The `regionedit` command line. Bad input → one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import torch

from regionedit import __version__
from regionedit.errors import RegionEditError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(2, f"regionedit: error: {message} (see `{self.prog} --help`)\n")


def _note(message: str) -> None:
    print(f"regionedit: note: {message}", file=sys.stderr)


def _quiet_libraries() -> None:
    """Keep the terminal for our own messages: no library progress bars or warnings."""
    import diffusers
    import huggingface_hub
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    logging.getLogger("accelerate").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------- shared helpers
def _add_model_options(parser: argparse.ArgumentParser, required: bool = False, task: str | None = None) -> None:
    """``task``: the command's default embedded model (:mod:`regionedit.models.defaults`) when --model is not given."""
    parser.add_argument(
        "--model", required=required,
        help="hub id (owner/name), local diffusers folder, embedded toy/... or tiny/... model (see `regionedit models`)"
        + (" (default: the embedded toy model for this command)" if task else ""),
    )
    if task:
        parser.set_defaults(model_task=task)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: GPU if present)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: fp16 on GPU, fp32 on CPU")
    parser.add_argument("--allow-pickle", action="store_true", help="also load pickled (.bin) weights; only for trusted sources")


def _device(args) -> torch.device:
    if args.device == "auto":
        from regionedit.models import default_device

        return default_device()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise RegionEditError(f"unknown device {args.device!r} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RegionEditError("--device cuda was given but no CUDA GPU is available")
    return device


def _fill_default_model(args) -> None:
    """--model not given: the embedded toy model of the command's task (text or pixel for DDPM)."""
    task = getattr(args, "model_task", None)
    if task is None or getattr(args, "model", None):
        return
    from regionedit.models.defaults import default_model

    if task == "ddpm" and getattr(args, "inversion", None):  # a saved inversion is edited with its own model
        from regionedit.core.inversion import DDPMInversion

        args.model = DDPMInversion.load(args.inversion).model
        return
    if task == "ddpm":
        texts = (getattr(args, name, None) for name in ("prompt", "source_prompt", "target_prompt"))
        task = "ddpm-text" if any(t is not None for t in texts) else "ddpm-pixel"
    if task == "directions-file":  # directions are applied with the model they were found with
        from regionedit.methods.directions import Directions

        args.model = Directions.load(args.directions).model
        return
    args.model = default_model(task)


def _load_model(args):
    from regionedit.models import load_model

    return load_model(args.model, device=_device(args), dtype=DTYPES.get(args.dtype), allow_pickle=args.allow_pickle)


def _read_image(path: str):
    from regionedit.images import load_image

    loaded = load_image(path)
    for note in loaded.notes:
        _note(note)
    return loaded.image


def _fit_notes(fit, model) -> None:
    if fit.working_size != fit.original_size:
        _note(f"input {fit.original_size[0]}×{fit.original_size[1]} downscaled to "
              f"{fit.working_size[0]}×{fit.working_size[1]} (--max-side; default: the model's {model.native_resolution})")
    if fit.padded_size != fit.working_size:
        _note(f"padded to {fit.padded_size[0]}×{fit.padded_size[1]} by reflection (sides must be multiples of "
              f"{model.size_multiple} for {model.name}); outputs are cropped back")


def _check_prompt(model, prompt: str | None, flag: str) -> None:
    if model.is_text_conditional and prompt is None:
        raise RegionEditError(f"model {model.name} is text-conditional: give {flag} (use {flag} '' for no text)")
    if not model.is_text_conditional and prompt:
        raise RegionEditError(f"model {model.name} is unconditional: drop {flag}")


def _check_nonnegative(**values: float) -> None:
    for name, value in values.items():
        if value is not None and not value >= 0:  # NaN too
            raise RegionEditError(f"--{name.replace('_', '-')} must be ≥ 0, got {value}")


def _check_finite(args: argparse.Namespace) -> None:
    """No float option may be NaN or ±inf (each library call also checks its own arguments)."""
    for name, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise RegionEditError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if getattr(args, "max_side", None) is not None and args.max_side < 1:
        raise RegionEditError(f"--max-side must be ≥ 1, got {args.max_side}")


def _pair(text: str, what: str, count: int, kind=float) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise RegionEditError(f"{what} must be {count} comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values) or (count and len(values) != count):
        raise RegionEditError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def _invert(args, model, image, prompt: str | None, guidance: float, ddim: bool = False):
    from regionedit.core.inversion import ddim_invert, invert

    _check_prompt(model, prompt, "--prompt" if args.command == "invert" else "--source-prompt")
    max_side = args.max_side or model.native_resolution
    if ddim:
        inversion = ddim_invert(model, image, prompt=prompt, guidance_scale=guidance, num_inference_steps=args.steps,
                                max_side=max_side, progress=not args.quiet)
        _fit_notes(inversion.fit, model)
        return inversion
    inversion = invert(
        model, image, prompt=prompt, guidance_scale=guidance, num_inference_steps=args.steps, eta=args.eta,
        seed=args.seed, batched=not args.sequential, batch_size=args.batch_size, max_side=max_side,
        progress=not args.quiet,
    )
    _fit_notes(inversion.fit, model)
    return inversion


def _add_inversion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=100, help="number of DDPM steps (paper: 100)")
    parser.add_argument("--eta", type=float, default=1.0, help="η of the sampler (paper: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random x_t draws (default 0)")
    parser.add_argument("--sequential", action="store_true", help="the paper's step-by-step loop instead of batched steps")
    parser.add_argument("--batch-size", type=int, default=16, help="timesteps per batched UNet call (default 16)")
    parser.add_argument("--max-side", type=int, help="downscale larger images to this side (default: the model's native size)")


def _add_edit_start_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inversion", choices=("ddim", "ddpm"), default="ddim",
                        help="reach x_t by DDIM inversion (default) or the edit-friendly DDPM inversion")
    parser.add_argument("--prompt", help="text describing the image (text models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, help="downscale larger images to this side (default: the model's native size)")


# ------------------------------------------------------------------------------------- commands
def cmd_invert(args) -> int:
    from regionedit.images import check_output_path

    _check_nonnegative(cfg=args.cfg, steps=args.steps)
    check_output_path(args.output, [args.image])
    image = _read_image(args.image)
    model = _load_model(args)
    inversion = _invert(args, model, image, args.prompt, args.cfg)
    inversion.save(args.output)
    print(f"wrote {args.output} ({inversion.num_inference_steps} noise maps of {tuple(inversion.zs.shape[1:])}, seed {inversion.seed})")
    return 0


def cmd_edit_ddpm(args) -> int:
    from regionedit.core.inversion import DDPMInversion
    from regionedit.images import check_output_path, save_png
    from regionedit.methods import ddpm_edit, p2p

    if (args.image is None) == (args.inversion is None):
        raise RegionEditError("give either an IMAGE to invert or --inversion FILE")
    p2p_flags = [flag for flag, value in (("--cross-replace", args.cross_replace), ("--self-replace", args.self_replace),
                                          ("--blend-words", args.blend_words), ("--reweight", args.reweight),
                                          ("--blend-mask", args.blend_mask)) if value]
    if p2p_flags and not args.p2p:
        raise RegionEditError(f"{', '.join(p2p_flags)}: only with --p2p")
    if args.inversion_type == "ddim" and not args.p2p:
        raise RegionEditError("--inversion-type ddim is for the Prompt-to-Prompt comparison: add --p2p")
    if args.num_samples < 1:
        raise RegionEditError(f"--num-samples must be ≥ 1, got {args.num_samples}")
    if args.num_samples > 1 and args.inversion_type == "ddim":
        raise RegionEditError("--num-samples > 1 needs the edit-friendly inversion (DDIM inversion draws nothing)")
    ddim = args.inversion_type == "ddim"
    if args.skip is None:
        args.skip = (p2p.DDIM_SKIP if ddim else p2p.DEFAULT_SKIP) if args.p2p else ddpm_edit.DEFAULT_SKIP
    if args.target_cfg is None:
        args.target_cfg = p2p.DEFAULT_TARGET_GUIDANCE if args.p2p else ddpm_edit.DEFAULT_TARGET_GUIDANCE
    _check_nonnegative(source_cfg=args.source_cfg, target_cfg=args.target_cfg, skip=args.skip)
    reweight = dict(_reweight(item) for item in args.reweight or [])
    steps = args.steps
    if args.inversion is not None:
        inversion = DDPMInversion.load(args.inversion)
        steps = inversion.num_inference_steps
    if args.skip >= steps:
        raise RegionEditError(f"--skip must be smaller than the number of steps ({steps}), got {args.skip}")
    outputs = _numbered(args.output, args.num_samples)
    for output in outputs:
        check_output_path(output, [args.image, args.inversion, args.save_inversion])
    image = _read_image(args.image) if args.image else None
    model = _load_model(args)
    _check_prompt(model, args.target_prompt, "--target-prompt")
    if args.inversion is None:
        inversion = _invert(args, model, image, args.source_prompt, args.source_cfg, ddim=ddim)
        if args.save_inversion:
            inversion.save(args.save_inversion)
    if args.shift:
        dx, dy = _pair(args.shift, "--shift", 2, int)
        inversion = ddpm_edit.shift(inversion, dx, dy)
    if args.tint:
        inversion = ddpm_edit.tint(inversion, _pair(args.tint, "--tint", model.channels))
    draws = ddpm_edit.redraws(model, inversion, args.num_samples) if args.num_samples > 1 else [inversion]
    blend_mask = None
    if args.blend_mask:
        blend_mask = (_resolve_mask(args, args.blend_mask, image, model, "Prompt-to-Prompt") if image is not None
                      else _mask_source(args, args.blend_mask, model, "Prompt-to-Prompt"))
    for output_path, draw in zip(outputs, draws, strict=True):
        if args.p2p:
            output = p2p.edit(model, draw, args.target_prompt, guidance_scale=args.target_cfg, skip=args.skip,
                              cross_replace=args.cross_replace, self_replace=args.self_replace, reweight=reweight,
                              blend_words=args.blend_words or (), blend_threshold=args.blend_threshold,
                              blend_mask=blend_mask, image=image, progress=not args.quiet)
        else:
            output = ddpm_edit.edit(model, draw, args.target_prompt, guidance_scale=args.target_cfg, skip=args.skip,
                                    progress=not args.quiet)
        recipe = {**output.recipe, "input": Path(args.image or args.inversion).name, "shift": args.shift, "tint": args.tint}
        save_png(output.image, output_path, recipe)
        print(f"wrote {output_path}")
    return 0


def _numbered(output: str, count: int) -> list[str]:
    """``out.png`` → [out.png] for one sample, [out-0.png, …, out-{N-1}.png] for N."""
    if count == 1:
        return [output]
    path = Path(output)
    return [str(path.with_name(f"{path.stem}-{k}{path.suffix}")) for k in range(count)]


def _reweight(text: str) -> tuple[str, float]:
    word, sep, value = text.partition("=")
    try:
        scale = float(value)
    except ValueError:
        scale = None
    if not sep or not word.strip() or scale is None:
        raise RegionEditError(f"--reweight must be WORD=SCALE (e.g. blue=2), got {text!r}")
    return word.strip(), scale


def _mask_source(args, spec: str, model, method: str):
    """A --mask spec (:func:`regionedit.mask_sources.parse_mask_spec`) → its source, with the companion
    it needs loaded: a text segmenter for text:, the family's instruct model for attention:."""
    from dataclasses import replace

    from regionedit.mask_sources import AttentionMask, TextMask, instruct_companion, parse_mask_spec

    source = parse_mask_spec(spec)
    if isinstance(source, TextMask):
        from regionedit.segment import load_segmenter

        name = (getattr(args, "segmenter", None) if method == "RDM" else None) or _companion(model.name, 0)
        threshold = args.threshold if method == "RDM" else source.threshold
        source = replace(source, segmenter=load_segmenter(name, model.device, args.allow_pickle), threshold=threshold)
    elif isinstance(source, AttentionMask):
        from regionedit.models import load_model

        name = instruct_companion(model)
        if name is None:
            raise RegionEditError(f"--mask {spec!r}: an attention mask needs an instruct model, and {method}'s model "
                                  f"{model.name} ({model.conditioning}) has none to go with it: use another mask source")
        instruct = model if name == model.name else load_model(name, device=model.device, dtype=model.dtype,
                                                               allow_pickle=args.allow_pickle)
        source = replace(source, model=instruct, seed=getattr(args, "seed", 0))
    return source


def _resolve_mask(args, spec: str, image, model, method: str):
    """A --mask spec resolved on the input image (its notes printed), as a named tensor source."""
    from regionedit.mask_sources import TensorMask, resolve_source

    resolved = resolve_source(_mask_source(args, spec, model, method), image, model, method)
    for note in resolved.notes:
        _note(note)
    return TensorMask(resolved.mask, resolved.source)


def _edit_start(args, model, image, num_inference_steps: int, timestep: int):
    from regionedit.methods.hspace_edit import start_from_image

    _check_prompt(model, args.prompt, "--prompt")
    start = start_from_image(model, image, timestep=timestep, num_inference_steps=num_inference_steps,
                             inversion=args.inversion, prompt=args.prompt, seed=args.seed,
                             max_side=args.max_side or model.native_resolution)
    _fit_notes(start.fit, model)
    return start


def cmd_discover(args) -> int:
    from regionedit.images import check_output_path
    from regionedit.methods import jica, rbe

    check_output_path(args.output, [args.image] + args.mask)
    if args.method == "rbe" and len(args.mask) != 1:
        raise RegionEditError(f"RBE takes one --mask, got {len(args.mask)} (JICA takes several)")
    image = _read_image(args.image)
    model = _load_model(args)
    masks = [_resolve_mask(args, spec, image, model, args.method.upper()).mask for spec in args.mask]
    start = _edit_start(args, model, image, args.steps, args.timestep)
    common = dict(space=args.space, max_iterations=args.max_iterations, tolerance=args.tolerance, jvp=args.jvp, seed=args.seed)
    if args.method == "rbe":
        directions = rbe.discover(model, start, masks[0], k=args.k, complement_rank=args.r, region_name=args.mask[0], **common)
    else:
        directions = jica.discover(model, start, masks, region_names=args.mask, svd_rank=args.svd_rank,
                                   joint_rank=args.joint_rank, individual_rank=args.individual_rank, **common)
    directions.save(args.output)
    report = directions.report
    print(f"wrote {args.output}: {len(directions)} directions ({', '.join(directions.labels)}) in {report['seconds']} s")
    if "leak_after" in report:
        print(f"leakage ‖J_C u‖/‖J_M u‖ before {report['leak_before']} after {report['leak_after']}")
    return 0


def cmd_edit_directions(args) -> int:
    from PIL import Image

    from regionedit import __version__
    from regionedit.images import check_output_path, save_png, tensor_to_pil
    from regionedit.methods.directions import Directions
    from regionedit.methods.hspace_edit import h_shape, sample_with_direction, to_pixels

    check_output_path(args.output, [args.image, args.directions])
    directions = Directions.load(args.directions)
    if directions.method != args.method:
        raise RegionEditError(f"{args.directions} holds {directions.method.upper()} directions; use `regionedit edit {directions.method}`")
    vector = directions.vector(args.index)
    image = _read_image(args.image)
    model = _load_model(args)
    start = _edit_start(args, model, image, directions.num_inference_steps, directions.timestep)
    directions.check_compatible(model.name, h_shape(model, start) if directions.space == "h" else tuple(start.x_t.shape[1:]))
    strengths = _pair(args.strengths, "--strengths", 0) if args.strip else (args.strength,)
    frames = []
    for strength in strengths:
        sample = sample_with_direction(model, start, vector, strength, directions.space, eta=args.eta,
                                       asymmetric=args.asymmetric, seed=args.seed)
        frames.append(tensor_to_pil(to_pixels(model, start, sample)[0] * 2 - 1))
    result = frames[0]
    if len(frames) > 1:
        result = Image.new("RGB", (sum(f.width for f in frames), frames[0].height))
        for i, frame in enumerate(frames):
            result.paste(frame, (i * frame.width, 0))
    recipe = {"method": directions.method, "version": __version__, "model": model.name, "input": Path(args.image).name,
              "directions": Path(args.directions).name, "index": args.index, "label": directions.labels[args.index],
              "strengths": list(strengths), "timestep": directions.timestep, "eta": args.eta,
              "asymmetric": args.asymmetric, "inversion": args.inversion, "seed": args.seed}
    save_png(result, args.output, recipe)
    print(f"wrote {args.output}")
    return 0


def _companion(model_name: str, index: int) -> str:
    from regionedit.segment import companions

    return companions(model_name)[index]


def cmd_edit_rdm(args) -> int:
    from regionedit.images import check_output_path, save_png
    from regionedit.masks import box_mask
    from regionedit.methods import rdm
    from regionedit.segment import load_clip, load_segmenter

    given = [x for x in (args.locate, args.mask, args.box) if x]
    if len(given) != 1:
        raise RegionEditError("say where to edit with exactly one of --locate TEXT, --mask SPEC or --box x0,y0,x1,y1")
    _check_nonnegative(cfg=args.cfg, clip_scale=args.clip_scale, nerp_mse=args.nerp_mse, nerp_lpips=args.nerp_lpips)
    check_output_path(args.output, [args.image, args.mask])
    if args.mask_out:
        check_output_path(args.mask_out, [args.image, args.mask, args.output])
    image = _read_image(args.image)
    mask = None
    if args.box:
        mask = box_mask(_pair(args.box, "--box", 4), image.size)
    device = _device(args)
    model = _load_model(args)
    if args.mask:
        mask = _resolve_mask(args, args.mask, image, model, "RDM")
    segmenter = None
    if args.locate:
        segmenter = load_segmenter(args.segmenter or _companion(args.model, 0), device, args.allow_pickle)
    clip_name = args.clip or _companion(args.model, 1)
    clip = None if clip_name == "none" or args.clip_scale == 0 else load_clip(clip_name, device, args.allow_pickle)
    max_side = args.max_side or model.native_resolution
    if max(image.size) > max_side and mask is not None:
        _note("the mask is downscaled with the image")
    output = rdm.edit(
        model, image, args.target, locate=args.locate, mask=mask, segmenter=segmenter, clip=clip,
        num_inference_steps=args.steps, guidance_scale=args.cfg, threshold=args.threshold, dilation=args.dilate,
        clip_guidance_scale=args.clip_scale if clip is not None else 0.0, cutouts=args.cutouts, nerp_mse=args.nerp_mse,
        nerp_lpips=args.nerp_lpips, paste_back=not args.no_paste_back, feather=args.feather, eta=args.eta,
        seed=args.seed, max_side=max_side, progress=not args.quiet,
    )
    save_png(output.image, args.output, {**output.recipe, "input": Path(args.image).name})
    if args.mask_out:
        from regionedit.images import tensor_to_pil

        save_png(tensor_to_pil(output.mask[0].expand(3, -1, -1) * 2 - 1).convert("L"), args.mask_out)
    note = "" if not args.no_paste_back else f" (background PSNR {output.background_psnr:.1f} dB without paste-back)"
    print(f"wrote {args.output}{note}")
    return 0


def _zone_editor(args):
    """Load ZONE's models once; return image, instruction → ZoneOutput."""
    from regionedit.methods import zone
    from regionedit.methods.actions import ActionClassifier
    from regionedit.models import load_model
    from regionedit.segment_everything import load_segment_everything

    _check_nonnegative(cfg=args.cfg, image_cfg=args.image_cfg)
    model = _load_model(args)
    second = None
    if not args.single:
        name = args.model2 or zone.partner_of(args.model)
        if name is not None:
            second = load_model(name, device=model.device, dtype=model.dtype, allow_pickle=args.allow_pickle)
    classifier = ActionClassifier.load(args.classifier) if args.classifier else None
    segmenter = load_segment_everything(args.segmenter, model.device, args.allow_pickle)

    def run(image, instruction: str, mask_spec: str | None = None):
        mask = _resolve_mask(args, mask_spec, image, model, "ZONE") if mask_spec else None
        output = zone.edit(model, image, instruction, mask=mask, second_model=second, classifier=classifier, segmenter=segmenter,
                           num_inference_steps=args.steps, guidance_scale=args.cfg, image_guidance_scale=args.image_cfg,
                           threshold=args.threshold, union_above=args.union_iou, seed=args.seed,
                           max_side=args.max_side or model.native_resolution, progress=not args.quiet)
        for note in output.recipe["notes"]:
            _note(note)
        return output

    return run


def _add_zone_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model2", help="second instruct model fused with --model (default: MagicBrush for hub "
                                         "models, toy/scenes-instruct-remove for toy/, tiny/ip2p-b for tiny/)")
    parser.add_argument("--single", action="store_true", help="use --model alone (no fusion)")
    parser.add_argument("--classifier", help="action classifier file (`regionedit train-classifier`); default: keywords")
    parser.add_argument("--segmenter", default="classical", help="segment everything: classical (default) or sam:<model>")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.5, help="text guidance (paper: 7.5)")
    parser.add_argument("--image-cfg", type=float, default=1.5, help="image guidance (paper: 1.5)")
    parser.add_argument("--threshold", type=float, default=128, help="attention threshold T on 0..255 (paper: 128)")
    parser.add_argument("--union-iou", type=float, help="take the union of segments with rIoU ≥ this (default: the best one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, help="downscale larger images to this side (default: the model's native size)")
    _add_model_options(parser, task="zone")


def cmd_edit_zone(args) -> int:
    from regionedit.images import check_output_path, save_png

    outputs = [p for p in (args.output, args.layer, args.mask_out) if p]
    for path in outputs:
        check_output_path(path, [args.image] + [o for o in outputs if o != path])
    image = _read_image(args.image)
    output = _zone_editor(args)(image, args.instruction, args.mask)
    recipe = {**output.recipe, "input": Path(args.image).name}
    save_png(output.image, args.output, recipe)
    if args.layer:
        save_png(output.layer, args.layer, recipe)
    if args.mask_out:
        from PIL import Image as PILImage

        save_png(PILImage.fromarray((output.final_mask[0, 0].numpy() * 255).astype("uint8")), args.mask_out)
    print(f"wrote {args.output} ({output.recipe['action']}, {output.timings['total_s']} s)")
    return 0


def cmd_session(args) -> int:
    from regionedit.session import Session

    if args.action == "new":
        session = Session.new(args.folder, args.image)
        print(f"started {args.folder} from {args.image}")
    elif args.action == "apply":
        session = Session.open(args.folder)
        turn = session.apply(_zone_editor(args), args.instruction)
        print(f"turn {turn['index']}: {turn['instruction']!r} → {Path(args.folder) / turn['image']}")
    elif args.action == "undo":
        session = Session.open(args.folder)
        turn = session.undo()
        print(f"undid turn {turn['index']} ({turn['instruction']!r}); current image: {session.current_path()}")
    else:
        print(Session.open(args.folder).describe())
    return 0


def cmd_train_classifier(args) -> int:
    from regionedit.images import check_output_path
    from regionedit.methods.actions import train_classifier

    check_output_path(args.output, [])
    classifier = train_classifier(_load_model(args), args.train, args.test, seed=args.seed)
    classifier.save(args.output)
    print(json.dumps(classifier.report, indent=2))
    return 0


def cmd_batch(args) -> int:
    from regionedit import batch

    device = None if args.device == "auto" else str(_device(args))
    if args.engine == "ray":
        summary = batch.run_ray(args.manifest, args.out, device, args.batch_size, args.model, workers=args.workers,
                                log=lambda m: print(m, file=sys.stderr))
    else:
        summary = batch.run_local(args.manifest, args.out, device, args.batch_size, args.model, progress=not args.quiet,
                                  log=lambda m: print(m, file=sys.stderr))
    if batch._rank_and_size()[0] == 0:
        failed = "".join(f"\n  {k}: {v}" for k, v in summary["failed"].items())
        print(f"{summary['done']}/{summary['items']} done, {len(summary['failed'])} failed, {len(summary['pending'])} pending, "
              f"{len(summary['malformed_lines'])} malformed lines skipped{failed}")
    return 0


def cmd_serve(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise RegionEditError("the web editor needs Gradio: pip install 'regionedit[app]' (or run `make serve`)") from None
    from regionedit.app import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _note(f"serving on {args.host}: anyone who can reach this address can use the editor")
    print(f"regionedit editor on http://{args.host}:{args.port} (Ctrl+C to stop)")
    serve(args.host, args.port, args.out)
    return 0


def cmd_models(args) -> int:
    from regionedit.bench.toymodels import model_status
    from regionedit.models.loading import embedded_models
    from regionedit.models.tiny import TINY_BUILDERS

    embedded = {name: str(path) for name, path in embedded_models().items()}
    tiny = {name: (builder.__doc__ or "").strip().splitlines()[0] for name, builder in TINY_BUILDERS.items()}
    if args.json:
        print(json.dumps({"embedded": embedded, "tiny": tiny}, indent=2))
        return 0
    print("Embedded toy-world models (offline, shipped in the package):")
    print("\n".join(f"  {n:26s} {model_status(Path(path))}" for n, path in embedded.items()) or "  none in this version")
    from regionedit.models.loading import embedded_components

    for name, path in embedded_components().items():
        print(f"  {name:26s} {model_status(path)} (the latent scene models' autoencoder)")
    print("Tiny random models (built on first use, for tests and benchmarks; outputs are noise):")
    for name, doc in tiny.items():
        print(f"  {name:18s} {doc}")
    print(
        "Any diffusers model also works with --model:\n"
        "  a hub id such as google/ddpm-ema-celebahq-256 or stable-diffusion-v1-5/stable-diffusion-v1-5\n"
        "  (read from the Hugging Face cache; downloaded when the hub is reachable, never when HF_HUB_OFFLINE=1),\n"
        "  or a local folder saved with save_pretrained. Weights must be safetensors unless --allow-pickle."
    )
    return 0


def cmd_demo(args) -> int:
    from regionedit.demo import run_demo

    run_demo(args.out, progress=not args.quiet)
    return 0


def cmd_bench_inversion(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.inversion import SD15_RANDOM, bench_inversion

    _check_nonnegative(steps=args.steps)
    model = args.model or ("tiny/sd" if args.tiny else SD15_RANDOM)
    result = bench_inversion(
        model, _device(args), DTYPES.get(args.dtype), size=args.size, steps=args.steps, batch_size=args.batch_size
    )
    print(write_json(result, args.json))
    return 0


def cmd_toyworld_export(args) -> int:
    from regionedit.toyworld.export import export

    if args.n < 1:
        raise RegionEditError(f"--n must be ≥ 1, got {args.n}")
    path = export(args.world, args.n, args.out, split=args.split, size=args.size, log=None if args.quiet else print)
    print(f"wrote {path}")
    return 0


def cmd_toyworld_train(args) -> int:
    from regionedit.toyworld.models import Speed
    from regionedit.toyworld.train import train

    train(args.name, out=args.out, steps=args.steps, device=None if args.device == "auto" else str(_device(args)),
          smoke=args.smoke, log=None if args.quiet else print, weights=args.weights, batch=args.batch,
          minutes=args.minutes, workers=args.workers, resume=args.resume,
          speed=Speed(args.pool, args.refresh_every, args.compile), edit_weight=args.edit_weight,
          evaluate=not args.no_evaluate, decoder_only=args.decoder_only)
    return 0


def cmd_bench_toyworld(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.toyworld import bench_rendering

    device = str(_device(args))
    print(write_json(bench_rendering(args.n, args.size, device, threads=args.threads), args.json))
    return 0


def cmd_bench_discover(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.discover import CELEBAHQ_RANDOM, bench_discover

    model = args.model or ("tiny/pixel-ddpm" if args.tiny else CELEBAHQ_RANDOM)
    result = bench_discover(model, _device(args), k=args.k, complement_rank=args.r, max_iterations=args.max_iterations,
                            jvp=args.jvp)
    print(write_json(result, args.json))
    return 0


def cmd_bench_directions(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.discover import bench_directions

    result = bench_directions(args.model, _device(args), method=args.method, count=args.n, strength=args.strength,
                              max_iterations=args.max_iterations)
    print(write_json(result, args.json))
    return 0


def cmd_bench_rdm(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.rdm import bench_rdm

    model = args.model or ("tiny/sd" if args.tiny else "toy/scenes-t2i")
    result = bench_rdm(model, args.segmenter or _companion(model, 0), args.clip or _companion(model, 1), _device(args),
                       steps=args.steps)
    print(write_json(result, args.json))
    return 0


def cmd_bench_zone(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.zone import bench_zone

    print(write_json(bench_zone(args.tiny, _device(args), steps=args.steps), args.json))
    return 0


def cmd_bench_p2p(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.inversion import SD15_RANDOM
    from regionedit.bench.p2p import bench_p2p

    _check_nonnegative(steps=args.steps, skip=args.skip)
    if args.skip >= args.steps:
        raise RegionEditError(f"--skip must be smaller than --steps ({args.steps}), got {args.skip}")
    if args.samples < 2 or args.repeats < 1:
        raise RegionEditError(f"--samples must be ≥ 2 and --repeats ≥ 1, got {args.samples} and {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or ("tiny/sd" if args.tiny else SD15_RANDOM)
    result = bench_p2p(model, _device(args), DTYPES.get(args.dtype), steps=args.steps, skip=args.skip,
                       repeats=args.repeats, samples=args.samples)
    print(write_json(result, args.json))
    return 0


def cmd_bench_batch(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.batch import bench_batch

    processes = tuple(int(p) for p in _pair(args.processes, "--processes", 0, int))
    print(write_json(bench_batch(processes, args.n, args.model, args.steps, args.batch_size, args.method), args.json))
    return 0


def cmd_bench_fuzz(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.fuzz import run_campaign

    if args.every < 1:
        raise RegionEditError(f"--every must be ≥ 1, got {args.every}")
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    result = run_campaign(args.keep, every=args.every, log=log)
    write_json(result, args.json)
    print(json.dumps(result["total"], sort_keys=True))
    return 0


def cmd_bench_training(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.training import bench_training

    print(write_json(bench_training(_device(args), args.batch, args.repeats, args.compile), args.json))
    return 0


def cmd_bench_toymodels(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.toymodels import MEASURED, bench_toymodels
    from regionedit.models.loading import embedded_components, embedded_models

    names = args.names or [n for n in MEASURED if n in {**embedded_models(), **embedded_components()}]
    if not names:
        raise RegionEditError(f"no embedded toy models in this installation (embedded: {', '.join(embedded_models()) or 'none'})")
    if args.update_cards and args.split != "benchmark":
        raise RegionEditError("--update-cards records the bars, which are measured on the benchmark split")
    device = None if args.device == "auto" else str(_device(args))
    result = bench_toymodels(names, device, args.n, args.split)
    if args.update_cards:
        from regionedit.bench.toymodels import update_cards

        update_cards(result)
    print(write_json(result, args.json))
    return 0


def cmd_bench_quality(args) -> int:
    from regionedit.bench import write_json
    from regionedit.bench.quality import make_method, markdown_table, run_quality
    from regionedit.images import atomic_write

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RegionEditError(f"--option must be key=value, got {item!r}")
        options[key] = _parse_value(value)
    method = make_method(args.method, args.world, options)
    result = run_quality(args.world, method, count=args.n, size=args.size, progress=not args.quiet, split=args.split)
    print(write_json(result, args.json))
    if args.md:
        atomic_write(args.md, lambda tmp: tmp.write_text(markdown_table(result)))
    return 0


def _parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


# --------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="regionedit", description="Local, region-aware image editing with diffusion models.")
    parser.add_argument("--version", action="version", version=f"regionedit {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    invert = commands.add_parser("invert", parents=[common], help="edit-friendly DDPM inversion of an image → noise maps (.safetensors)")
    invert.add_argument("image")
    invert.add_argument("-o", "--output", required=True, help="inversion file to write (.safetensors)")
    invert.add_argument("--prompt", help="text describing the image (text models; '' for none)")
    invert.add_argument("--cfg", type=float, default=3.5, help="source classifier-free guidance (paper: 3.5)")
    _add_model_options(invert, task="ddpm")
    _add_inversion_options(invert)
    invert.set_defaults(func=cmd_invert)

    edit = commands.add_parser("edit", help="edit an image with one of the methods")
    methods = edit.add_subparsers(dest="method", required=True, parser_class=_Parser)
    ddpm = methods.add_parser("ddpm", parents=[common], help="text-based editing in the edit-friendly DDPM noise space")
    ddpm.add_argument("image", nargs="?", help="image to invert and edit (or give --inversion)")
    ddpm.add_argument("--inversion", help="reuse a saved inversion instead of inverting IMAGE")
    ddpm.add_argument("-o", "--output", required=True, help="PNG to write")
    ddpm.add_argument("--source-prompt", help="text describing the input (text models)")
    ddpm.add_argument("--target-prompt", help="text describing the wanted result (text models)")
    ddpm.add_argument("--source-cfg", type=float, default=3.5, help="source guidance (paper: 3.5)")
    ddpm.add_argument("--target-cfg", type=float, help="target guidance (paper: 15; with --p2p 9)")
    ddpm.add_argument("--skip", type=int, help="steps skipped before editing starts (paper: 36 of 100; --p2p 12, DDIM 0)")
    ddpm.add_argument("--shift", help="DX,DY: translate the noise maps (sample pixels)")
    ddpm.add_argument("--tint", help="comma-separated per-channel offsets added to the noise maps")
    ddpm.add_argument("--save-inversion", help="also write the inversion of IMAGE to this file")
    ddpm.add_argument("--num-samples", type=int, default=1,
                      help="N edits from N independent noise-map draws (seeds SEED…SEED+N-1): writes OUT-0.png … OUT-{N-1}.png")
    ddpm.add_argument("--p2p", action="store_true", help="Prompt-to-Prompt attention control (replace / refine by token count)")
    ddpm.add_argument("--cross-replace", type=float, help="--p2p: fraction of the steps with cross-attention edited (0.6; DDIM 0.8)")
    ddpm.add_argument("--self-replace", type=float, help="--p2p: fraction of the steps with self-attention injected (0.2; DDIM 0.4)")
    ddpm.add_argument("--blend-words", nargs="+", metavar="WORD", help="--p2p: local blending by these words' attention")
    ddpm.add_argument("--blend-threshold", type=float, default=0.3, help="--p2p: blend-mask threshold (P2P: 0.3)")
    ddpm.add_argument("--blend-mask", metavar="SPEC", help="--p2p: local blending from a mask instead of words (a mask "
                      "image, x0,y0,x1,y1, face:<part>, text:<words>, attention:<instruction>, segment:x,y)")
    ddpm.add_argument("--reweight", action="append", metavar="WORD=SCALE", help="--p2p: scale a target word's attention (repeatable)")
    ddpm.add_argument("--inversion-type", choices=("ddpm", "ddim"), default="ddpm",
                      help="edit-friendly DDPM inversion (default) or DDIM inversion (with --p2p, for comparison)")
    _add_model_options(ddpm, task="ddpm")
    _add_inversion_options(ddpm)
    ddpm.set_defaults(func=cmd_edit_ddpm)

    zone_parser = methods.add_parser("zone", parents=[common], help="ZONE: apply an instruction locally (change, add, remove)")
    zone_parser.add_argument("image")
    zone_parser.add_argument("instruction", help="e.g. 'make the ball blue'")
    zone_parser.add_argument("-o", "--output", required=True, help="PNG to write")
    zone_parser.add_argument("--layer", help="also write the edited layer as an RGBA PNG")
    zone_parser.add_argument("--mask-out", help="also write the final mask as a PNG")
    zone_parser.add_argument("--mask", metavar="SPEC", help="a region replacing the attention localisation: a mask image, "
                             "x0,y0,x1,y1, face:<part>, text:<words>, attention:<instruction>, segment:x,y")
    _add_zone_options(zone_parser)
    zone_parser.set_defaults(func=cmd_edit_zone)

    rdm = methods.add_parser("rdm", parents=[common], help="RDM: replace what a text names (or a mask covers) by a target text")
    rdm.add_argument("image")
    rdm.add_argument("--target", required=True, help="what the region should become, e.g. 'a blue ball'")
    rdm.add_argument("--locate", help="positioning text naming the region, e.g. 'the ball' (segmenter)")
    rdm.add_argument("--mask", help="instead of --locate: a mask image (non-zero = edit), x0,y0,x1,y1, face:<part>, "
                                    "text:<words>, attention:<instruction>, segment:x,y or segment:#i")
    rdm.add_argument("--box", help="x0,y0,x1,y1 box in pixels instead of --locate")
    rdm.add_argument("-o", "--output", required=True, help="PNG to write")
    rdm.add_argument("--mask-out", help="also write the edit mask as a PNG")
    rdm.add_argument("--segmenter", help="CLIPSeg model (default: matches --model; CIDAS/clipseg-rd64-refined for hub models)")
    rdm.add_argument("--clip", help="CLIP model for guidance, or 'none' (default: matches --model)")
    rdm.add_argument("--steps", type=int, default=50)
    rdm.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance (RDM code: 5)")
    rdm.add_argument("--threshold", type=float, default=150, help="mask threshold K on 0..255 (paper: 150)")
    rdm.add_argument("--dilate", type=int, default=0, help="grow the mask by this many pixels")
    rdm.add_argument("--clip-scale", type=float, default=150.0, help="CLIP guidance scale (code: 150; 0 = off)")
    rdm.add_argument("--cutouts", type=int, default=16)
    rdm.add_argument("--nerp-mse", type=float, default=10000.0, help="NERP MSE weight outside the mask (code: 10000)")
    rdm.add_argument("--nerp-lpips", type=float, default=1000.0, help="NERP LPIPS weight (code: 1000; needs the lpips extra)")
    rdm.add_argument("--no-paste-back", action="store_true", help="keep the sampled background (its PSNR is reported)")
    rdm.add_argument("--feather", type=int, default=0, help="soften the paste-back edge inwards by this many pixels")
    rdm.add_argument("--eta", type=float, default=0.0)
    rdm.add_argument("--seed", type=int, default=0)
    rdm.add_argument("--max-side", type=int, help="downscale larger images to this side (default: the model's native size)")
    _add_model_options(rdm, task="rdm")
    rdm.set_defaults(func=cmd_edit_rdm)

    for method in ("rbe", "jica"):
        edit_dirs = methods.add_parser(method, parents=[common], help=f"apply {method.upper()} directions (from `regionedit discover {method}`)")
        edit_dirs.add_argument("image")
        edit_dirs.add_argument("--directions", required=True, help="directions file (.safetensors)")
        edit_dirs.add_argument("--index", type=int, default=0, help="which direction (default 0, the strongest)")
        edit_dirs.add_argument("--strength", type=float, default=30.0, help="γ in h ← h + γu (RBE code: ±30)")
        edit_dirs.add_argument("--strip", action="store_true", help="write a slider strip over --strengths")
        edit_dirs.add_argument("--strengths", default="-30,-15,0,15,30", help="γ values of the strip (write --strengths=-30,0,30 for negative values)")
        edit_dirs.add_argument("--eta", type=float, default=0.0, help="η of the sampler (0: deterministic DDIM)")
        edit_dirs.add_argument("--asymmetric", action="store_true", help="Asyrp's asymmetric step")
        edit_dirs.add_argument("-o", "--output", required=True, help="PNG to write")
        _add_edit_start_options(edit_dirs)
        _add_model_options(edit_dirs, task="directions-file")
        edit_dirs.set_defaults(func=cmd_edit_directions, method=method)

    discover = commands.add_parser("discover", help="find local edit directions (RBE, JICA) from region Jacobians")
    discovers = discover.add_subparsers(dest="method", required=True, parser_class=_Parser)
    for method, about in (("rbe", "a region's top directions, confined away from the rest"),
                          ("jica", "joint and individual directions of several regions")):
        sub = discovers.add_parser(method, parents=[common], help=about)
        sub.add_argument("image")
        sub.add_argument("--mask", action="append", required=True,
                         help="mask image, box x0,y0,x1,y1 (pixels), face:<part>, text:<words>, attention:<instruction>, "
                              "segment:x,y or segment:#i" +
                         ("" if method == "rbe" else "; repeat for each region"))
        sub.add_argument("-o", "--output", required=True, help="directions file to write (.safetensors)")
        sub.add_argument("--timestep", type=int, default=500, help="timestep of the Jacobian (RBE code: 500)")
        sub.add_argument("--steps", type=int, default=40, help="DDIM steps of the schedule (RBE code: 40)")
        sub.add_argument("--space", choices=("h", "x"), default="h", help="h-space (default) or x_t-space")
        sub.add_argument("--jvp", choices=("finite-difference", "autodiff"), default="finite-difference",
                         help="J·v by central differences (default, fast) or forward-mode AD (exact, ~7× slower)")
        sub.add_argument("--max-iterations", type=int, default=50)
        sub.add_argument("--tolerance", type=float, default=1e-5)
        if method == "rbe":
            sub.add_argument("--k", type=int, default=3, help="directions to find (default 3)")
            sub.add_argument("--r", type=int, default=8, help="rank of the complement removed (default 8)")
        else:
            sub.add_argument("--svd-rank", type=int, default=10, help="truncated SVD rank per region (default 10)")
            sub.add_argument("--joint-rank", type=int, default=2, help="joint subspace rank r_C (default 2)")
            sub.add_argument("--individual-rank", type=int, default=3, help="individual rank r_A (default 3)")
        _add_edit_start_options(sub)
        _add_model_options(sub, task=method)
        sub.set_defaults(func=cmd_discover)

    session = commands.add_parser("session", help="multi-turn ZONE editing saved in a folder (new, apply, undo, show)")
    sessions = session.add_subparsers(dest="action", required=True, parser_class=_Parser)
    new = sessions.add_parser("new", parents=[common], help="start a session from an image (the image is copied)")
    new.add_argument("folder")
    new.add_argument("image")
    apply = sessions.add_parser("apply", parents=[common], help="apply an instruction to the current image")
    apply.add_argument("folder")
    apply.add_argument("instruction")
    _add_zone_options(apply)
    for name, about in (("undo", "drop the last turn"), ("show", "print the history")):
        sub = sessions.add_parser(name, parents=[common], help=about)
        sub.add_argument("folder")
    session.set_defaults(func=cmd_session)

    train_cls = commands.add_parser("train-classifier", parents=[common],
                                    help="train ZONE's action classifier on an instruct model's text embeddings")
    train_cls.add_argument("-o", "--output", required=True, help="classifier file to write (.safetensors)")
    train_cls.add_argument("--train", type=int, default=450, help="generated training instructions (paper: 450)")
    train_cls.add_argument("--test", type=int, default=150, help="held-out instructions (paper: 150)")
    train_cls.add_argument("--seed", type=int, default=0)
    _add_model_options(train_cls, task="zone")
    train_cls.set_defaults(func=cmd_train_classifier)

    batch_parser = commands.add_parser("batch", parents=[common], help="edit every item of a JSONL manifest (resumable)")
    batch_parser.add_argument("manifest")
    batch_parser.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    batch_parser.add_argument("--engine", choices=("local", "ray"), default="local",
                              help="local (default; run under `accelerate launch` for several processes) or ray")
    batch_parser.add_argument("--batch-size", type=int, default=8, help="ZONE items of one model sampled together")
    batch_parser.add_argument("--workers", type=int, default=2, help="Ray actors (--engine ray)")
    batch_parser.add_argument("--model", help="model for lines that name none")
    batch_parser.add_argument("--device", default="auto")
    batch_parser.set_defaults(func=cmd_batch)

    serve_parser = commands.add_parser("serve", parents=[common], help="the web editor (Gradio) on this machine")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve_parser.add_argument("--port", type=int, default=7860)
    serve_parser.add_argument("--out", help="folder for the results (default: a new temporary folder)")
    serve_parser.set_defaults(func=cmd_serve)

    models = commands.add_parser("models", parents=[common], help="list embedded and tiny models; how to use hub ids and folders")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    demo = commands.add_parser("demo", parents=[common], help="run the methods on sample images and write an HTML gallery")
    demo.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    demo.set_defaults(func=cmd_demo)

    bench = commands.add_parser("bench", help="speed and quality benchmarks (JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    inv = benches.add_parser("inversion", parents=[common], help="step-by-step vs timestep-batched inversion, same run")
    inv.add_argument("--tiny", action="store_true", help="use the tiny SD-like model (default: random SD-1.5-sized)")
    _add_model_options(inv)
    inv.add_argument("--size", type=int, help="image side in pixels (default: the model's native size)")
    inv.add_argument("--steps", type=int, default=100)
    inv.add_argument("--batch-size", type=int, default=16)
    inv.add_argument("--json", help="write the result to this file")
    inv.set_defaults(func=cmd_bench_inversion)

    disc = benches.add_parser("discover", parents=[common], help="seconds to find RBE directions at one timestep")
    disc.add_argument("--tiny", action="store_true", help="the tiny pixel DDPM (default: random DDPM-CelebAHQ-256-sized)")
    _add_model_options(disc)
    disc.add_argument("--k", type=int, default=3)
    disc.add_argument("--r", type=int, default=8)
    disc.add_argument("--max-iterations", type=int, default=50)
    disc.add_argument("--jvp", choices=("finite-difference", "autodiff"), default="finite-difference")
    disc.add_argument("--json", help="write the result to this file")
    disc.set_defaults(func=cmd_bench_discover)

    dirs = benches.add_parser("directions", parents=[common],
                              help="toy faces: locality, factors moved and transfer of RBE/JICA directions")
    _add_model_options(dirs, task="rbe")
    dirs.add_argument("--method", choices=("rbe", "jica"), default="rbe")
    dirs.add_argument("--n", type=int, default=50, help="faces (default 50)")
    dirs.add_argument("--strength", type=float, default=30.0)
    dirs.add_argument("--max-iterations", type=int, default=50)
    dirs.add_argument("--json", help="write the result to this file")
    dirs.set_defaults(func=cmd_bench_directions)

    rdm_bench = benches.add_parser("rdm", parents=[common], help="RDM's cost over plain sampling, same model and steps")
    rdm_bench.add_argument("--tiny", action="store_true", help="tiny random SD, CLIPSeg and CLIP")
    _add_model_options(rdm_bench)
    rdm_bench.add_argument("--segmenter")
    rdm_bench.add_argument("--clip")
    rdm_bench.add_argument("--steps", type=int, default=50)
    rdm_bench.add_argument("--json", help="write the result to this file")
    rdm_bench.set_defaults(func=cmd_bench_rdm)

    zone_bench = benches.add_parser("zone", parents=[common], help="seconds per ZONE edit, with a breakdown")
    zone_bench.add_argument("--tiny", action="store_true", help="tiny models on the CPU (default: real sizes, random weights)")
    zone_bench.add_argument("--device", default="auto")
    zone_bench.add_argument("--steps", type=int, default=20)
    zone_bench.add_argument("--json", help="write the result to this file")
    zone_bench.set_defaults(func=cmd_bench_zone)

    p2p_bench = benches.add_parser("p2p", parents=[common], help="Prompt-to-Prompt's cost over the plain edit-friendly edit, and diversity")
    p2p_bench.add_argument("--tiny", action="store_true", help="tiny/sd (default: random SD-1.5-sized)")
    _add_model_options(p2p_bench, required=False)
    p2p_bench.add_argument("--steps", type=int, default=100)
    p2p_bench.add_argument("--skip", type=int, default=12)
    p2p_bench.add_argument("--repeats", type=int, default=3, help="timed runs of each edit (the best is kept)")
    p2p_bench.add_argument("--samples", type=int, default=3, help="noise-map draws for the diversity measurement")
    p2p_bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p2p_bench.add_argument("--json", help="write the result to this file")
    p2p_bench.set_defaults(func=cmd_bench_p2p)

    batch_bench = benches.add_parser("batch", parents=[common], help="items per second of `regionedit batch`, 1 vs N processes")
    batch_bench.add_argument("--processes", default="1,2")
    batch_bench.add_argument("--method", choices=("zone", "rbe"), default="zone",
                             help="zone: toy-scene instructions; rbe: eye directions on toy faces")
    batch_bench.add_argument("--n", type=int, default=32, help="edits in the manifest")
    batch_bench.add_argument("--model", help="default: tiny/ip2p (zone), toy/faces-ddpm (rbe)")
    batch_bench.add_argument("--steps", type=int, default=20, help="ZONE sampling steps")
    batch_bench.add_argument("--batch-size", type=int, default=4, help="ZONE edits sampled together")
    batch_bench.add_argument("--json", help="write the result to this file")
    batch_bench.set_defaults(func=cmd_bench_batch)

    fuzz = benches.add_parser("fuzz", parents=[common], help="bad and odd inputs through every entry point; counts tracebacks")
    fuzz.add_argument("--every", type=int, default=1, help="run every N-th case of each category (default: all)")
    fuzz.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder, removed)")
    fuzz.add_argument("--json", help="write the result to this file")
    fuzz.set_defaults(func=cmd_bench_fuzz)

    training_bench = benches.add_parser("training", parents=[common], help="time of a training step of each toy model")
    training_bench.add_argument("--batch", type=int, default=256)
    training_bench.add_argument("--repeats", type=int, default=5)
    training_bench.add_argument("--compile", action="store_true", help="also time the steps with torch.compile")
    training_bench.add_argument("--device", default="auto")
    training_bench.add_argument("--json", help="write the result to this file")
    training_bench.set_defaults(func=cmd_bench_training)

    toy_bench = benches.add_parser("toymodels", parents=[common], help="the quality bars of the embedded toy models")
    toy_bench.add_argument("names", nargs="*", help="toy/… models or model folders (default: every embedded one)")
    toy_bench.add_argument("--n", type=int, help="samples per measurement (default: each bar's own)")
    toy_bench.add_argument("--device", default="auto")
    toy_bench.add_argument("--json", help="write the result to this file")
    toy_bench.add_argument("--update-cards", action="store_true", help="write each measurement into the model's card.json")
    toy_bench.add_argument("--split", choices=("benchmark", "validation"), default="benchmark",
                           help="validation: for choosing settings (the bars are judged on the benchmark split)")
    toy_bench.set_defaults(func=cmd_bench_toymodels)

    speed = benches.add_parser("toyworld", parents=[common], help="toy-world rendering speed (images per second)")
    speed.add_argument("--n", type=int, default=2000, help="images per world")
    speed.add_argument("--size", type=int, default=64)
    speed.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    speed.add_argument("--device", default="cpu")
    speed.add_argument("--json", help="write the result to this file")
    speed.set_defaults(func=cmd_bench_toyworld)

    quality = benches.add_parser("quality", parents=[common], help="run a method over a toy world's benchmark split")
    quality.add_argument("--world", required=True, choices=("faces", "scenes"))
    quality.add_argument("--method", required=True, help="identity, oracle, or a registered method")
    quality.add_argument("--option", action="append", default=[], help="KEY=VALUE passed to the method (repeatable)")
    quality.add_argument("--n", type=int, default=200, help="benchmark edits (default 200)")
    quality.add_argument("--size", type=int, default=64)
    quality.add_argument("--json", help="write the result to this file")
    quality.add_argument("--md", help="also write a markdown table")
    quality.add_argument("--split", choices=("benchmark", "validation"), default="benchmark",
                         help="validation: for choosing settings; figures are reported on the benchmark split")
    quality.set_defaults(func=cmd_bench_quality)

    toy = commands.add_parser("toyworld", help="the procedural toy worlds: export splits, train their networks")
    toys = toy.add_subparsers(dest="toyworld", required=True, parser_class=_Parser)
    export = toys.add_parser("export", parents=[common], help="write a split as PNGs, masks and a JSONL manifest")
    export.add_argument("world", choices=("faces", "scenes"))
    export.add_argument("--n", type=int, required=True, help="number of items")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--split", default="benchmark", choices=("train", "validation", "benchmark"))
    export.add_argument("--size", type=int, default=64)
    export.set_defaults(func=cmd_toyworld_export)
    train = toys.add_parser("train", parents=[common], help="reproduce an embedded network: probe-faces, probe-scenes, "
                            "scenes-clip, scenes-clipseg, faces-ddpm, scenes-t2i, scenes-instruct, scenes-instruct-remove")
    train.add_argument("name")
    train.add_argument("--steps", type=int, help="training steps (default: the documented setting)")
    train.add_argument("--out", help="output folder (default: the package's weights folder)")
    train.add_argument("--device", default="auto")
    train.add_argument("--smoke", action="store_true", help="a few steps only, to check the pipeline")
    train.add_argument("--weights", help="folder of the prerequisite models (default: the package's weights)")
    train.add_argument("--batch", type=int, help="batch size (default: the documented setting)")
    train.add_argument("--minutes", type=float, help="stop after this much wall-clock time, if the steps are not done first")
    train.add_argument("--resume", action="store_true", help="start from the weights already in the output folder")
    train.add_argument("--pool", type=int, default=0, help="diffusion models: draw batches from a refreshing pool of N rendered examples")
    train.add_argument("--refresh-every", type=int, default=4, help="with --pool: render one fresh batch every K steps")
    train.add_argument("--compile", action="store_true", help="run the forward pass through torch.compile")
    train.add_argument("--workers", type=int, help="data worker processes (default: 2 on a GPU, 0 on the CPU)")
    train.add_argument("--decoder-only", action="store_true", help="scenes-vae --resume: tune the decoder alone (latents unchanged)")
    train.add_argument("--no-evaluate", action="store_true", help="skip the bar measurement at the end (bench toymodels does it)")
    train.add_argument("--edit-weight", type=float, help="latent instruct models: loss weight inside the edited region (default 1)")
    train.set_defaults(func=cmd_toyworld_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        _check_finite(args)
        _fill_default_model(args)
        return args.func(args)
    except RegionEditError as exc:
        print(f"regionedit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("regionedit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
