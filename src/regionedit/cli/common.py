"""What the command families share: the parser class, model options, device and image loading, checks.

Nothing here imports torch or a model library at import time, so that ``regionedit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

from regionedit.errors import RegionEditError

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MAX_SIDE_HELP = "downscale larger images to this side (default: the model's native size)"


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(2, f"regionedit: error: {message} (see `{self.prog} --help`)\n")


QUIET = argparse.ArgumentParser(add_help=False)
QUIET.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_command(group, name: str, help: str, func: Callable[[argparse.Namespace], int] | None = None,
                **defaults) -> argparse.ArgumentParser:
    """A command of ``group`` with -q/--quiet, run by ``func`` (set on the parent for commands with actions)."""
    parser = group.add_parser(name, parents=[QUIET], help=help)
    if func is not None:
        defaults["func"] = func
    parser.set_defaults(**defaults)
    return parser


def add_group(commands, name: str, help: str, dest: str):
    """A command whose first argument chooses one of its subcommands."""
    return commands.add_parser(name, help=help).add_subparsers(dest=dest, required=True, parser_class=Parser)


def note(message: str) -> None:
    print(f"regionedit: note: {message}", file=sys.stderr)


def quiet_libraries() -> None:
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


# --------------------------------------------------------------------------------- models, devices
def add_model_options(parser: argparse.ArgumentParser, required: bool = False, task: str | None = None) -> None:
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


def device(args: argparse.Namespace):
    """--device as a torch device, checked."""
    import torch

    if args.device == "auto":
        from regionedit.models import default_device

        return default_device()
    try:
        chosen = torch.device(args.device)
    except RuntimeError:
        raise RegionEditError(f"unknown device {args.device!r} (use cpu, cuda, cuda:N or auto)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise RegionEditError("--device cuda was given but no CUDA GPU is available")
    return chosen


def device_name(args: argparse.Namespace) -> str | None:
    """--device for callees that pick their own device: None for auto, else the checked name."""
    return None if args.device == "auto" else str(device(args))


def dtype(args: argparse.Namespace):
    """--dtype as a torch dtype, or None for the model's default."""
    if args.dtype is None:
        return None
    import torch

    return getattr(torch, DTYPES[args.dtype])


def load_model(args: argparse.Namespace):
    from regionedit.models import load_model as load

    return load(args.model, device=device(args), dtype=dtype(args), allow_pickle=args.allow_pickle)


def load_editor(cls, args: argparse.Namespace, **companions):
    """The editor ``cls`` of --model on --device and --dtype (``companions``: its own), with -q's progress bars."""
    loaded = cls.from_pretrained(args.model, device=device(args), dtype=dtype(args), allow_pickle=args.allow_pickle,
                                 **companions)
    loaded.set_progress_bar_config(disable=args.quiet)
    return loaded


def companion(model_name: str, index: int) -> str:
    """The default text segmenter (0) or CLIP (1) of a diffusion model."""
    from regionedit.segment import companions

    return companions(model_name)[index]


# ------------------------------------------------------------------------------- images and masks
def read_image(path: str):
    from regionedit.images import load_image

    loaded = load_image(path)
    for message in loaded.notes:
        note(message)
    return loaded.image


def fit_notes(fit, model) -> None:
    if fit.working_size != fit.original_size:
        note(f"input {fit.original_size[0]}×{fit.original_size[1]} downscaled to "
             f"{fit.working_size[0]}×{fit.working_size[1]} (--max-side; default: the model's {model.native_resolution})")
    if fit.padded_size != fit.working_size:
        note(f"padded to {fit.padded_size[0]}×{fit.padded_size[1]} by reflection (sides must be multiples of "
             f"{model.size_multiple} for {model.name}); outputs are cropped back")


def resolve_mask(editor, spec: str, image, seed: int, method: str | None = None, **options):
    """A --mask spec with the companions the editor gives it (:meth:`regionedit.editors.base.Editor.mask_source`,
    with ``options``; ``seed`` for attention:), resolved on the input image (its notes printed), as a
    named tensor source. ``method``: the name in messages (default: the editor's)."""
    from regionedit.mask_sources import TensorMask, resolve_source

    source = editor.mask_source(spec, seed, "--mask", **options)
    resolved = resolve_source(source, image, editor.model, method or editor.method)
    for message in resolved.notes:
        note(message)
    return TensorMask(resolved.mask, resolved.source)


# ---------------------------------------------------------------------------------------- checks
def check_prompt(model, prompt: str | None, flag: str) -> None:
    if model.is_text_conditional and prompt is None:
        raise RegionEditError(f"model {model.name} is text-conditional: give {flag} (use {flag} '' for no text)")
    if not model.is_text_conditional and prompt:
        raise RegionEditError(f"model {model.name} is unconditional: drop {flag}")


def check_nonnegative(**values: float) -> None:
    for name, value in values.items():
        if value is not None and not value >= 0:  # NaN too
            raise RegionEditError(f"--{name.replace('_', '-')} must be ≥ 0, got {value}")


def check_positive(flag: str, value: int) -> None:
    if value < 1:
        raise RegionEditError(f"{flag} must be ≥ 1, got {value}")


def check_finite(args: argparse.Namespace) -> None:
    """No float option may be NaN or ±inf (each library call also checks its own arguments)."""
    for name, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise RegionEditError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if getattr(args, "max_side", None) is not None:
        check_positive("--max-side", args.max_side)


def pair(text: str, what: str, count: int, kind=float) -> tuple:
    """``count`` comma-separated numbers (any number of them for 0)."""
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise RegionEditError(f"{what} must be {count} comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values) or (count and len(values) != count):
        raise RegionEditError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values
