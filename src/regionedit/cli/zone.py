"""ZONE's commands: `regionedit edit zone`, multi-turn `regionedit session …` and `regionedit train-classifier`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regionedit import defaults
from regionedit.cli.common import (
    MAX_SIDE_HELP,
    add_command,
    add_group,
    add_model_options,
    check_nonnegative,
    load_editor,
    load_model,
    note,
    read_image,
    resolve_mask,
)


def _add_zone_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model2", help="second instruct model fused with --model (default: MagicBrush for hub "
                                         "models, toy/scenes-instruct-remove for toy/, tiny/ip2p-b for tiny/)")
    parser.add_argument("--single", action="store_true", help="use --model alone (no fusion)")
    parser.add_argument("--classifier", default="auto",
                        help="action classifier file (`regionedit train-classifier`); auto (default): the one the model "
                             "folder ships (action_classifier.safetensors), else keywords; none: keywords")
    parser.add_argument("--segmenter", default="classical", help="segment everything: classical (default) or sam:<model>")
    parser.add_argument("--steps", type=int, default=defaults.ZONE_STEPS, help=f"sampling steps (paper: {defaults.ZONE_STEPS})")
    parser.add_argument("--cfg", type=float, default=defaults.ZONE_TEXT_GUIDANCE,
                        help=f"text guidance (paper: {defaults.ZONE_TEXT_GUIDANCE:g})")
    parser.add_argument("--image-cfg", type=float, default=defaults.ZONE_IMAGE_GUIDANCE,
                        help=f"image guidance (paper: {defaults.ZONE_IMAGE_GUIDANCE:g})")
    parser.add_argument("--threshold", type=float, default=defaults.ZONE_THRESHOLD,
                        help=f"attention threshold T on 0..255 (paper: {defaults.ZONE_THRESHOLD:g})")
    parser.add_argument("--localisation", choices=["attention", "change"],
                        help="coarse mask from the attention maps (the paper; default for hub models) or from where "
                             "the edit changed the image (default for toy/ models, chosen on the validation split)")
    parser.add_argument("--change-threshold", type=float, default=defaults.ZONE_CHANGE_THRESHOLD,
                        help=f"with --localisation change: mean RGB change that counts (default {defaults.ZONE_CHANGE_THRESHOLD:g})")
    parser.add_argument("--union-iou", type=float, help="take the union of segments with rIoU ≥ this (default: the best one)")
    parser.add_argument("--keep-segment", action=argparse.BooleanOptionalAction,
                        help="the final mask also keeps the whole refined segment (default for toy/ models, chosen on "
                             "the validation split; hub models: the paper's smoothed change alone)")
    parser.add_argument("--keep-segment-limit", type=float, default=defaults.ZONE_KEEP_SEGMENT_LIMIT,
                        help="with --keep-segment: keep the segment only when its area is at most this many times "
                             "the smoothed change's (default: always)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, help=MAX_SIDE_HELP)
    add_model_options(parser, task="zone")


def _zone_editor(args: argparse.Namespace):
    """Load ZONE's editor once (--model2, --single, --classifier, --segmenter as its companions);
    return image, instruction, mask spec → EditorOutput."""
    from regionedit import checks
    from regionedit.editors import ZoneEditor

    check_nonnegative(cfg=args.cfg, image_cfg=args.image_cfg)
    second = None if args.single else args.model2 or "auto"
    editor = load_editor(ZoneEditor, args, second_model=second, classifier=args.classifier,
                         segmenter=args.segmenter)

    def run(image, instruction: str, mask_spec: str | None = None):
        mask = resolve_mask(editor, mask_spec, image, args.seed) if mask_spec else None
        checks.seed(args.seed)  # named as before (the editor would say generator)
        output = editor(image, instruction, mask=mask, num_inference_steps=args.steps, guidance_scale=args.cfg,
                        image_guidance_scale=args.image_cfg, threshold=args.threshold, localisation=args.localisation,
                        change_threshold=args.change_threshold, union_above=args.union_iou,
                        keep_segment=args.keep_segment, keep_segment_limit=args.keep_segment_limit, generator=args.seed, max_side=args.max_side)
        for message in output.recipe["notes"]:
            note(message)
        return output

    return run


# ------------------------------------------------------------------------------------- edit zone
def add_edit(methods) -> None:
    parser = add_command(methods, "zone", "ZONE: apply an instruction locally (change, add, remove)", cmd_edit_zone)
    parser.add_argument("image")
    parser.add_argument("instruction", help="e.g. 'make the ball blue'")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--layer", help="also write the edited layer as an RGBA PNG")
    parser.add_argument("--mask-out", help="also write the final mask as a PNG")
    parser.add_argument("--mask", metavar="SPEC", help="a region replacing the attention localisation: a mask image, "
                        "x0,y0,x1,y1, face:<part>, text:<words>, attention:<instruction>, segment:x,y")
    _add_zone_options(parser)


def cmd_edit_zone(args: argparse.Namespace) -> int:
    from regionedit.images import check_output_path, mask_to_pil, save_png

    outputs = [p for p in (args.output, args.layer, args.mask_out) if p]
    for path in outputs:
        check_output_path(path, [args.image] + [o for o in outputs if o != path])
    image = read_image(args.image)
    output = _zone_editor(args)(image, args.instruction, args.mask)
    recipe = {**output.recipe, "input": Path(args.image).name}
    save_png(output.image, args.output, recipe)
    if args.layer:
        save_png(output.images["layer"], args.layer, recipe)
    if args.mask_out:
        save_png(mask_to_pil(output.masks["final"]), args.mask_out)
    print(f"wrote {args.output} ({output.recipe['action']}, {output.details.timings['total_s']} s)")
    return 0


# --------------------------------------------------------------------------------------- session
def add_session(commands) -> None:
    sessions = add_group(commands, "session", "multi-turn ZONE editing saved in a folder (new, apply, undo, show)", "action")
    new = add_command(sessions, "new", "start a session from an image (the image is copied)", cmd_session, loads_models=False)
    new.add_argument("folder")
    new.add_argument("image")
    apply = add_command(sessions, "apply", "apply an instruction to the current image", cmd_session)
    apply.add_argument("folder")
    apply.add_argument("instruction")
    _add_zone_options(apply)
    for name, about in (("undo", "drop the last turn"), ("show", "print the history")):
        add_command(sessions, name, about, cmd_session, loads_models=False).add_argument("folder")


def cmd_session(args: argparse.Namespace) -> int:
    from regionedit.session import Session

    if args.action == "new":
        Session.new(args.folder, args.image)
        print(f"started {args.folder} from {args.image}")
    elif args.action == "apply":
        session, run = Session.open(args.folder), _zone_editor(args)
        turn = session.apply(lambda image, instruction: run(image, instruction).details, args.instruction)
        print(f"turn {turn['index']}: {turn['instruction']!r} → {Path(args.folder) / turn['image']}")
    elif args.action == "undo":
        session = Session.open(args.folder)
        turn = session.undo()
        print(f"undid turn {turn['index']} ({turn['instruction']!r}); current image: {session.current_path()}")
    else:
        print(Session.open(args.folder).describe())
    return 0


# ------------------------------------------------------------------------------ train-classifier
def add_train_classifier(commands) -> None:
    train = add_command(commands, "train-classifier", "train ZONE's action classifier on an instruct model's text embeddings",
                        cmd_train_classifier)
    train.add_argument("-o", "--output", required=True, help="classifier file to write (.safetensors)")
    train.add_argument("--train", type=int, default=defaults.ZONE_TRAIN_INSTRUCTIONS,
                       help=f"generated training instructions (paper: {defaults.ZONE_TRAIN_INSTRUCTIONS})")
    train.add_argument("--test", type=int, default=defaults.ZONE_TEST_INSTRUCTIONS,
                       help=f"held-out instructions (paper: {defaults.ZONE_TEST_INSTRUCTIONS})")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--instructions", choices=["templates", "toyworld"], default="templates",
                       help="templates: our sentences over a COCO-like vocabulary, held-out objects and phrasings "
                            "(default); toyworld: the toy scenes' instructions (train split; held out: validation)")
    add_model_options(train, task="zone")


def toyworld_instructions(split: str, count: int, unseen_templates: bool = False) -> list[tuple[str, int]] | None:
    """The toy scenes' own instructions as (text, label): train split for "train", validation for
    "test"; the toy world has no held-out phrasings (None)."""
    from regionedit.methods.actions import ACTIONS
    from regionedit.toyworld.scenes import action_instructions, zone_action

    if unseen_templates:
        return None
    pairs = action_instructions("train" if split == "train" else "validation", count)
    return [(text, ACTIONS.index(zone_action(action))) for text, action in pairs]


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from regionedit.images import check_output_path
    from regionedit.methods.actions import train_classifier

    check_output_path(args.output, [])
    source = toyworld_instructions if args.instructions == "toyworld" else None
    classifier = train_classifier(load_model(args), args.train, args.test, seed=args.seed, instructions=source)
    classifier.report["instructions"] = args.instructions
    classifier.save(args.output)
    print(json.dumps(classifier.report, indent=2))
    return 0
