"""`regionedit invert` and `regionedit edit ddpm`: the edit-friendly DDPM noise space (and Prompt-to-Prompt)."""

from __future__ import annotations

import argparse
from pathlib import Path

from regionedit import defaults
from regionedit.cli.common import (
    MAX_SIDE_HELP,
    add_command,
    add_model_options,
    check_nonnegative,
    check_positive,
    check_prompt,
    fit_notes,
    load_editor,
    pair,
    read_image,
    resolve_mask,
)
from regionedit.errors import RegionEditError


def _add_inversion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=defaults.DDPM_STEPS,
                        help=f"number of DDPM steps (paper: {defaults.DDPM_STEPS})")
    parser.add_argument("--eta", type=float, default=defaults.DDPM_ETA, help=f"η of the sampler (paper: {defaults.DDPM_ETA:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random x_t draws (default 0)")
    parser.add_argument("--sequential", action="store_true", help="the paper's step-by-step loop instead of batched steps")
    parser.add_argument("--batch-size", type=int, default=defaults.DDPM_BATCH_SIZE,
                        help=f"timesteps per batched UNet call (default {defaults.DDPM_BATCH_SIZE})")
    parser.add_argument("--max-side", type=int, help=MAX_SIDE_HELP)


def _editor(args: argparse.Namespace):
    """The DDPM editor of --model, on --device and --dtype."""
    from regionedit.editors import DDPMEditor

    return load_editor(DDPMEditor, args)


def _invert(args: argparse.Namespace, editor, image, prompt: str | None, guidance: float, ddim: bool = False):
    """The editor's :meth:`invert` of the image, with the CLI's checks and notes."""
    from regionedit import checks

    check_prompt(editor.model, prompt, "--prompt" if args.command == "invert" else "--source-prompt")
    if not ddim:
        checks.seed(args.seed)  # named as before (the editor would say generator)
    inversion = editor.invert(image, prompt=prompt, guidance_scale=guidance, num_inference_steps=args.steps, eta=args.eta,
                              inversion_type="ddim" if ddim else "ddpm", generator=args.seed, max_side=args.max_side,
                              batched=not args.sequential, batch_size=args.batch_size,
                              record_attention=bool(getattr(args, "p2p", False)))
    fit_notes(inversion.fit, editor.model)
    return inversion


# ---------------------------------------------------------------------------------------- invert
def add_invert(commands) -> None:
    invert = add_command(commands, "invert", "edit-friendly DDPM inversion of an image → noise maps (.safetensors)", cmd_invert)
    invert.add_argument("image")
    invert.add_argument("-o", "--output", required=True, help="inversion file to write (.safetensors)")
    invert.add_argument("--prompt", help="text describing the image (text models; '' for none)")
    invert.add_argument("--cfg", type=float, default=defaults.DDPM_SOURCE_GUIDANCE,
                        help=f"source classifier-free guidance (paper: {defaults.DDPM_SOURCE_GUIDANCE:g})")
    add_model_options(invert, task="ddpm")
    _add_inversion_options(invert)


def cmd_invert(args: argparse.Namespace) -> int:
    from regionedit.images import check_output_path

    check_nonnegative(cfg=args.cfg, steps=args.steps)
    check_output_path(args.output, [args.image])
    image = read_image(args.image)
    inversion = _invert(args, _editor(args), image, args.prompt, args.cfg)
    inversion.save(args.output)
    print(f"wrote {args.output} ({inversion.num_inference_steps} noise maps of {tuple(inversion.zs.shape[1:])}, seed {inversion.seed})")
    return 0


# ------------------------------------------------------------------------------------- edit ddpm
def add_edit(methods) -> None:
    ddpm = add_command(methods, "ddpm", "text-based editing in the edit-friendly DDPM noise space", cmd_edit_ddpm)
    ddpm.add_argument("image", nargs="?", help="image to invert and edit (or give --inversion)")
    ddpm.add_argument("--inversion", help="reuse a saved inversion instead of inverting IMAGE")
    ddpm.add_argument("-o", "--output", required=True, help="PNG to write")
    ddpm.add_argument("--source-prompt", help="text describing the input (text models)")
    ddpm.add_argument("--target-prompt", help="text describing the wanted result (text models)")
    ddpm.add_argument("--source-cfg", type=float, default=defaults.DDPM_SOURCE_GUIDANCE,
                      help=f"source guidance (paper: {defaults.DDPM_SOURCE_GUIDANCE:g})")
    ddpm.add_argument("--target-cfg", type=float, help=f"target guidance (paper: {defaults.DDPM_TARGET_GUIDANCE:g}; "
                                                       f"with --p2p {defaults.P2P_TARGET_GUIDANCE:g})")
    ddpm.add_argument("--skip", type=int, help=f"steps skipped before editing starts (paper: {defaults.DDPM_SKIP} of "
                      f"{defaults.DDPM_STEPS}; --p2p {defaults.P2P_SKIP}, DDIM {defaults.P2P_DDIM_SKIP})")
    ddpm.add_argument("--shift", help="DX,DY: translate the noise maps (sample pixels)")
    ddpm.add_argument("--tint", help="comma-separated per-channel offsets added to the noise maps")
    ddpm.add_argument("--save-inversion", help="also write the inversion of IMAGE to this file")
    ddpm.add_argument("--num-samples", type=int, default=1,
                      help="N edits from N independent noise-map draws (seeds SEED…SEED+N-1): writes OUT-0.png … OUT-{N-1}.png")
    ddpm.add_argument("--p2p", action="store_true", help="Prompt-to-Prompt attention control (replace / refine by token count)")
    ddpm.add_argument("--cross-replace", type=float, help="--p2p: fraction of the steps with cross-attention edited "
                      f"({defaults.P2P_CROSS_REPLACE:g}; DDIM {defaults.P2P_DDIM_CROSS_REPLACE:g})")
    ddpm.add_argument("--self-replace", type=float, help="--p2p: fraction of the steps with self-attention injected "
                      f"({defaults.P2P_SELF_REPLACE:g}; DDIM {defaults.P2P_DDIM_SELF_REPLACE:g})")
    ddpm.add_argument("--blend-words", nargs="+", metavar="WORD", help="--p2p: local blending by these words' attention")
    ddpm.add_argument("--blend-threshold", type=float, default=defaults.P2P_BLEND_THRESHOLD,
                      help=f"--p2p: blend-mask threshold (P2P: {defaults.P2P_BLEND_THRESHOLD:g})")
    ddpm.add_argument("--blend-mask", metavar="SPEC", help="--p2p: local blending from a mask instead of words (a mask "
                      "image, x0,y0,x1,y1, face:<part>, text:<words>, attention:<instruction>, segment:x,y)")
    ddpm.add_argument("--reweight", action="append", metavar="WORD=SCALE", help="--p2p: scale a target word's attention (repeatable)")
    ddpm.add_argument("--inversion-type", choices=("ddpm", "ddim"), default="ddpm",
                      help="edit-friendly DDPM inversion (default) or DDIM inversion (with --p2p, for comparison)")
    add_model_options(ddpm, task="ddpm")
    _add_inversion_options(ddpm)


def _check_edit_flags(args: argparse.Namespace) -> None:
    if (args.image is None) == (args.inversion is None):
        raise RegionEditError("give either an IMAGE to invert or --inversion FILE")
    p2p_flags = [flag for flag, value in (("--cross-replace", args.cross_replace), ("--self-replace", args.self_replace),
                                          ("--blend-words", args.blend_words), ("--reweight", args.reweight),
                                          ("--blend-mask", args.blend_mask)) if value]
    if p2p_flags and not args.p2p:
        raise RegionEditError(f"{', '.join(p2p_flags)}: only with --p2p")
    if args.inversion_type == "ddim" and not args.p2p:
        raise RegionEditError("--inversion-type ddim is for the Prompt-to-Prompt comparison: add --p2p")
    check_positive("--num-samples", args.num_samples)
    if args.num_samples > 1 and args.inversion_type == "ddim":
        raise RegionEditError("--num-samples > 1 needs the edit-friendly inversion (DDIM inversion draws nothing)")


def cmd_edit_ddpm(args: argparse.Namespace) -> int:
    from regionedit.core.inversion import DDPMInversion
    from regionedit.images import check_output_path, save_png
    from regionedit.methods import ddpm_edit

    _check_edit_flags(args)
    ddim = args.inversion_type == "ddim"
    if args.skip is None:
        args.skip = (defaults.P2P_DDIM_SKIP if ddim else defaults.P2P_SKIP) if args.p2p else defaults.DDPM_SKIP
    if args.target_cfg is None:
        args.target_cfg = defaults.P2P_TARGET_GUIDANCE if args.p2p else defaults.DDPM_TARGET_GUIDANCE
    check_nonnegative(source_cfg=args.source_cfg, target_cfg=args.target_cfg, skip=args.skip)
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
    image = read_image(args.image) if args.image else None
    editor = _editor(args)
    check_prompt(editor.model, args.target_prompt, "--target-prompt")
    if args.inversion is None:
        inversion = _invert(args, editor, image, args.source_prompt, args.source_cfg, ddim=ddim)
        if args.save_inversion:
            inversion.save(args.save_inversion)
    if args.shift:
        dx, dy = pair(args.shift, "--shift", 2, int)
        inversion = ddpm_edit.shift(inversion, dx, dy)
    if args.tint:
        inversion = ddpm_edit.tint(inversion, pair(args.tint, "--tint", editor.model.channels))
    draws = editor.redraws(inversion, args.num_samples) if args.num_samples > 1 else [inversion]
    p2p_options = _p2p_options(args, editor, image, reweight) if args.p2p else {}
    for output_path, draw in zip(outputs, draws, strict=True):
        output = editor.edit(draw, prompt=args.target_prompt, guidance_scale=args.target_cfg, skip=args.skip,
                             p2p=args.p2p, image=image, **p2p_options)
        recipe = {**output.recipe, "input": Path(args.image or args.inversion).name, "shift": args.shift, "tint": args.tint}
        save_png(output.image, output_path, recipe)
        print(f"wrote {output_path}")
    return 0


def _p2p_options(args: argparse.Namespace, editor, image, reweight: dict[str, float]) -> dict:
    """--p2p's options for :meth:`DDPMEditor.edit`: the blend mask resolved once on IMAGE (its
    notes printed), or with its companions for the inversion's decoded input."""
    blend_mask = None
    if args.blend_mask and image is not None:
        blend_mask = resolve_mask(editor, args.blend_mask, image, args.seed, "Prompt-to-Prompt")
    elif args.blend_mask:
        blend_mask = editor.mask_source(args.blend_mask, args.seed, "--mask")
    return dict(cross_replace=args.cross_replace, self_replace=args.self_replace, reweight=reweight,
                blend_words=args.blend_words or (), blend_threshold=args.blend_threshold, blend_mask=blend_mask)


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
