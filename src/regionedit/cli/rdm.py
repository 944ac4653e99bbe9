"""`regionedit edit rdm`: replace what a text names (or a mask covers) by a target text."""

from __future__ import annotations

import argparse
from pathlib import Path

from regionedit import defaults
from regionedit.cli.common import (
    MAX_SIDE_HELP,
    add_command,
    add_model_options,
    check_nonnegative,
    load_editor,
    note,
    pair,
    read_image,
    resolve_mask,
)
from regionedit.errors import RegionEditError


def add_edit(methods) -> None:
    rdm = add_command(methods, "rdm", "RDM: replace what a text names (or a mask covers) by a target text", cmd_edit_rdm)
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
    rdm.add_argument("--steps", type=int, default=defaults.RDM_STEPS, help=f"sampling steps (RDM code: {defaults.RDM_STEPS})")
    rdm.add_argument("--cfg", type=float, default=defaults.RDM_GUIDANCE,
                     help=f"classifier-free guidance (RDM code: {defaults.RDM_GUIDANCE:g})")
    rdm.add_argument("--threshold", type=float, default=defaults.RDM_THRESHOLD,
                     help=f"mask threshold K on 0..255 (paper: {defaults.RDM_THRESHOLD:g})")
    rdm.add_argument("--dilate", type=int, default=0, help="grow the mask by this many pixels")
    rdm.add_argument("--clip-scale", type=float, default=defaults.RDM_CLIP_SCALE,
                     help=f"CLIP guidance scale (code: {defaults.RDM_CLIP_SCALE:g}; 0 = off)")
    rdm.add_argument("--cutouts", type=int, default=defaults.RDM_CUTOUTS, help=f"CLIP cutouts (code: {defaults.RDM_CUTOUTS})")
    rdm.add_argument("--nerp-mse", type=float, default=defaults.RDM_NERP_MSE,
                     help=f"NERP MSE weight outside the mask (code: {defaults.RDM_NERP_MSE:g})")
    rdm.add_argument("--nerp-lpips", type=float, default=defaults.RDM_NERP_LPIPS,
                     help=f"NERP LPIPS weight (code: {defaults.RDM_NERP_LPIPS:g}; needs the lpips extra)")
    rdm.add_argument("--no-blend", action="store_true",
                     help="ablation: sample the whole latent freely instead of blending the noised original outside the mask")
    rdm.add_argument("--no-paste-back", action="store_true", help="keep the sampled background (its PSNR is reported)")
    rdm.add_argument("--feather", type=int, default=0, help="soften the paste-back edge inwards by this many pixels")
    rdm.add_argument("--eta", type=float, default=defaults.RDM_ETA, help=f"η of the sampler (default {defaults.RDM_ETA:g})")
    rdm.add_argument("--seed", type=int, default=0)
    rdm.add_argument("--max-side", type=int, help=MAX_SIDE_HELP)
    add_model_options(rdm, task="rdm")


def _check_flags(args: argparse.Namespace) -> None:
    from regionedit.images import check_output_path

    if len([x for x in (args.locate, args.mask, args.box) if x]) != 1:
        raise RegionEditError("say where to edit with exactly one of --locate TEXT, --mask SPEC or --box x0,y0,x1,y1")
    check_nonnegative(cfg=args.cfg, clip_scale=args.clip_scale, nerp_mse=args.nerp_mse, nerp_lpips=args.nerp_lpips)
    check_output_path(args.output, [args.image, args.mask])
    if args.mask_out:
        check_output_path(args.mask_out, [args.image, args.mask, args.output])


def cmd_edit_rdm(args: argparse.Namespace) -> int:
    from regionedit import checks
    from regionedit.editors import RDMEditor
    from regionedit.images import mask_to_pil, save_png
    from regionedit.masks import box_mask

    _check_flags(args)
    image = read_image(args.image)
    mask = None
    if args.box:
        mask = box_mask(pair(args.box, "--box", 4), image.size)
    editor = load_editor(RDMEditor, args, segmenter=args.segmenter or "auto", clip=args.clip or "auto")
    if args.mask:
        mask = resolve_mask(editor, args.mask, image, args.seed, threshold=args.threshold)
    clip_scale = 0.0 if editor.clip is None else args.clip_scale  # --clip none: no CLIP guidance
    if args.locate:
        editor.loaded_segmenter()
    editor.loaded_clip(clip_scale)  # the companions load (or fail) before any note
    if max(image.size) > editor.max_side(args.max_side) and mask is not None:
        note("the mask is downscaled with the image")
    checks.seed(args.seed)  # named as before (the editor would say generator)
    out = editor(
        image, args.target, locate=args.locate, mask=mask, num_inference_steps=args.steps, guidance_scale=args.cfg,
        threshold=args.threshold, dilation=args.dilate, clip_guidance_scale=clip_scale, cutouts=args.cutouts,
        nerp_mse=args.nerp_mse, nerp_lpips=args.nerp_lpips, blend=not args.no_blend, paste_back=not args.no_paste_back,
        feather=args.feather,
        eta=args.eta, generator=args.seed, max_side=args.max_side,
    )
    save_png(out.image, args.output, {**out.recipe, "input": Path(args.image).name})
    if args.mask_out:
        save_png(mask_to_pil(out.masks["edit"]), args.mask_out)
    psnr = "" if not args.no_paste_back else f" (background PSNR {out.details.background_psnr:.1f} dB without paste-back)"
    print(f"wrote {args.output}{psnr}")
    return 0
