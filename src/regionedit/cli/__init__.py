"""The `regionedit` command line. Bad input → one line on stderr and exit code 2.

One module per command family, each holding its commands' arguments next to their handlers:
:mod:`~regionedit.cli.ddpm` (invert, edit ddpm), :mod:`~regionedit.cli.zone` (edit zone, session,
train-classifier), :mod:`~regionedit.cli.rdm`, :mod:`~regionedit.cli.directions` (discover, edit
rbe|jica), :mod:`~regionedit.cli.batch`, :mod:`~regionedit.cli.apps` (serve, models, demo),
:mod:`~regionedit.cli.bench` and :mod:`~regionedit.cli.toyworld`. Torch and the model libraries are
imported by the handlers that need them, so building the parser (and ``--help``) stays light.
"""

from __future__ import annotations

import argparse
import sys

from regionedit import __version__
from regionedit.cli import apps, batch, bench, ddpm, directions, rdm, toyworld, zone
from regionedit.cli.common import Parser, add_group, check_finite, quiet_libraries
from regionedit.errors import RegionEditError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree, in the order `regionedit --help` lists it."""
    parser = Parser(prog="regionedit", description="Local, region-aware image editing with diffusion models.")
    parser.add_argument("--version", action="version", version=f"regionedit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    ddpm.add_invert(commands)
    methods = add_group(commands, "edit", "edit an image with one of the methods", "method")
    for family in (ddpm, zone, rdm, directions):
        family.add_edit(methods)
    directions.add_discover(add_group(commands, "discover", "find local edit directions (RBE, JICA) from region Jacobians",
                                      "method"))
    zone.add_session(commands)
    zone.add_train_classifier(commands)
    batch.add_batch(commands)
    apps.add_serve(commands)
    apps.add_models(commands)
    apps.add_demo(commands)
    bench.add_bench(commands)
    toyworld.add_toyworld(commands)
    return parser


def _fill_default_model(args: argparse.Namespace) -> None:
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "loads_models", True):
        quiet_libraries()
    try:
        check_finite(args)
        _fill_default_model(args)
        return args.func(args)
    except RegionEditError as exc:
        print(f"regionedit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("regionedit: interrupted", file=sys.stderr)
        return 130
