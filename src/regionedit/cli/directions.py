"""`regionedit discover rbe|jica` finds local directions; `regionedit edit rbe|jica` applies them."""

from __future__ import annotations

import argparse
from pathlib import Path

from regionedit import defaults
from regionedit.cli.common import (
    MAX_SIDE_HELP,
    add_command,
    add_model_options,
    check_prompt,
    fit_notes,
    load_editor,
    pair,
    read_image,
    resolve_mask,
)
from regionedit.errors import RegionEditError


def _add_start_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inversion", choices=("ddim", "ddpm"), default="ddim",
                        help="reach x_t by DDIM inversion (default) or the edit-friendly DDPM inversion")
    parser.add_argument("--prompt", help="text describing the image (text models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, help=MAX_SIDE_HELP)


def _editor(args: argparse.Namespace):
    """The RBE or JICA editor of --model, on --device and --dtype."""
    from regionedit.editors import JICAEditor, RBEEditor

    return load_editor(RBEEditor if args.method == "rbe" else JICAEditor, args)


def _start(args: argparse.Namespace, editor, image, num_inference_steps: int, timestep: int):
    """The image at ``timestep`` (the editor's :meth:`invert`), with the CLI's checks and notes."""
    from regionedit import checks

    check_prompt(editor.model, args.prompt, "--prompt")
    checks.seed(args.seed)
    start = editor.invert(image, timestep=timestep, num_inference_steps=num_inference_steps, inversion=args.inversion,
                          prompt=args.prompt, generator=args.seed, max_side=args.max_side)
    fit_notes(start.fit, editor.model)
    return start


# -------------------------------------------------------------------------------------- discover
def add_discover(discovers) -> None:
    for method, about in (("rbe", "a region's top directions, confined away from the rest"),
                          ("jica", "joint and individual directions of several regions")):
        sub = add_command(discovers, method, about, cmd_discover)
        sub.add_argument("image")
        sub.add_argument("--mask", action="append", required=True,
                         help="mask image, box x0,y0,x1,y1 (pixels), face:<part>, text:<words>, attention:<instruction>, "
                              "segment:x,y or segment:#i" +
                         ("" if method == "rbe" else "; repeat for each region"))
        sub.add_argument("-o", "--output", required=True, help="directions file to write (.safetensors)")
        sub.add_argument("--timestep", type=int, default=defaults.HSPACE_TIMESTEP,
                         help=f"timestep of the Jacobian (RBE code: {defaults.HSPACE_TIMESTEP})")
        sub.add_argument("--steps", type=int, default=defaults.HSPACE_STEPS,
                         help=f"DDIM steps of the schedule (RBE code: {defaults.HSPACE_STEPS})")
        sub.add_argument("--space", choices=("h", "x"), default="h", help="h-space (default) or x_t-space")
        sub.add_argument("--jvp", choices=("finite-difference", "autodiff"), default=defaults.HSPACE_JVP,
                         help="J·v by central differences (default, fast) or forward-mode AD (exact, ~7× slower)")
        sub.add_argument("--max-iterations", type=int, default=defaults.HSPACE_MAX_ITERATIONS,
                         help=f"subspace iterations at most (RBE code: {defaults.HSPACE_MAX_ITERATIONS})")
        sub.add_argument("--tolerance", type=float, default=defaults.HSPACE_TOLERANCE,
                         help="stop when every Ritz value moves less than this, relative to the largest "
                              f"(default {defaults.HSPACE_TOLERANCE:g})")
        if method == "rbe":
            sub.add_argument("--k", type=int, default=defaults.RBE_K, help=f"directions to find (default {defaults.RBE_K})")
            sub.add_argument("--r", type=int, default=defaults.RBE_COMPLEMENT_RANK,
                             help=f"rank of the complement removed (default {defaults.RBE_COMPLEMENT_RANK})")
        else:
            sub.add_argument("--svd-rank", type=int, default=defaults.JICA_SVD_RANK,
                             help=f"truncated SVD rank per region (default {defaults.JICA_SVD_RANK})")
            sub.add_argument("--joint-rank", type=int, default=defaults.JICA_JOINT_RANK,
                             help=f"joint subspace rank r_C (default {defaults.JICA_JOINT_RANK})")
            sub.add_argument("--individual-rank", type=int, default=defaults.JICA_INDIVIDUAL_RANK,
                             help=f"individual rank r_A (default {defaults.JICA_INDIVIDUAL_RANK})")
        _add_start_options(sub)
        add_model_options(sub, task=method)


def cmd_discover(args: argparse.Namespace) -> int:
    from regionedit.images import check_output_path

    check_output_path(args.output, [args.image] + args.mask)
    if args.method == "rbe" and len(args.mask) != 1:
        raise RegionEditError(f"RBE takes one --mask, got {len(args.mask)} (JICA takes several)")
    image = read_image(args.image)
    editor = _editor(args)
    masks = [resolve_mask(editor, spec, image, args.seed).mask for spec in args.mask]
    start = _start(args, editor, image, args.steps, args.timestep)
    search = dict(space=args.space, max_iterations=args.max_iterations, tolerance=args.tolerance, jvp=args.jvp,
                  generator=args.seed)
    if args.method == "rbe":
        directions = editor.discover(start, masks[0], k=args.k, complement_rank=args.r, region_name=args.mask[0], **search)
    else:
        directions = editor.discover(start, masks, region_names=args.mask, svd_rank=args.svd_rank,
                                     joint_rank=args.joint_rank, individual_rank=args.individual_rank, **search)
    directions.save(args.output)
    report = directions.report
    print(f"wrote {args.output}: {len(directions)} directions ({', '.join(directions.labels)}) in {report['seconds']} s")
    if "leak_after" in report:
        print(f"leakage ‖J_C u‖/‖J_M u‖ before {report['leak_before']} after {report['leak_after']}")
    return 0


# ----------------------------------------------------------------------------------- edit rbe|jica
def add_edit(methods) -> None:
    for method in ("rbe", "jica"):
        edit = add_command(methods, method, f"apply {method.upper()} directions (from `regionedit discover {method}`)",
                           cmd_edit_directions, method=method)
        edit.add_argument("image")
        edit.add_argument("--directions", required=True, help="directions file (.safetensors)")
        edit.add_argument("--index", type=int, default=0, help="which direction (default 0, the strongest)")
        edit.add_argument("--strength", type=float, default=defaults.RBE_STRENGTH,
                          help=f"γ in h ← h + γu (RBE code: ±{defaults.RBE_STRENGTH:g})")
        edit.add_argument("--strip", action="store_true", help="write a slider strip over --strengths")
        edit.add_argument("--strengths", default=",".join(f"{s:g}" for s in defaults.RBE_STRIP),
                          help="γ values of the strip (write --strengths=-30,0,30 for negative values)")
        edit.add_argument("--eta", type=float, default=defaults.HSPACE_ETA,
                          help=f"η of the sampler (default {defaults.HSPACE_ETA:g}: deterministic DDIM)")
        edit.add_argument("--asymmetric", action="store_true", help="Asyrp's asymmetric step")
        edit.add_argument("-o", "--output", required=True, help="PNG to write")
        _add_start_options(edit)
        add_model_options(edit, task="directions-file")


def cmd_edit_directions(args: argparse.Namespace) -> int:
    from regionedit import __version__
    from regionedit.images import check_output_path, save_png
    from regionedit.methods.directions import Directions

    check_output_path(args.output, [args.image, args.directions])
    directions = Directions.load(args.directions)
    if directions.method != args.method:
        raise RegionEditError(f"{args.directions} holds {directions.method.upper()} directions; use `regionedit edit {directions.method}`")
    directions.vector(args.index)  # a bad --index fails before the model loads
    image = read_image(args.image)
    editor = _editor(args)
    directions.check_model(editor.model.name)
    start = _start(args, editor, image, directions.num_inference_steps, directions.timestep)
    options = dict(eta=args.eta, asymmetric=args.asymmetric, generator=args.seed)
    if args.strip:
        strengths = pair(args.strengths, "--strengths", 0)
        out = editor.strip(start, directions, args.index, strengths, **options)
    else:
        strengths = (args.strength,)
        out = editor.apply(start, directions, args.index, args.strength, **options)
    recipe = {"method": directions.method, "version": __version__, "model": editor.model.name, "input": Path(args.image).name,
              "directions": Path(args.directions).name, "index": args.index, "label": directions.labels[args.index],
              "strengths": list(strengths), "timestep": directions.timestep, "eta": args.eta,
              "asymmetric": args.asymmetric, "inversion": args.inversion, "seed": args.seed}
    save_png(out.image, args.output, recipe)
    print(f"wrote {args.output}")
    return 0
