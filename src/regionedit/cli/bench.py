"""`regionedit bench …`: the speed and quality benchmarks, each printing (and with --json writing) its result.

One row of :data:`BENCHES` per benchmark: its help, its arguments, the benchmark function as
``module:function`` (imported only when that benchmark runs) and how the arguments reach it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from regionedit.cli.common import (
    add_command,
    add_group,
    add_model_options,
    check_nonnegative,
    check_positive,
    companion,
    device,
    device_name,
    dtype,
    pair,
)
from regionedit import defaults
from regionedit.errors import RegionEditError


@dataclass(frozen=True)
class Arg:
    """One ``parser.add_argument(*flags, **options)``."""

    flags: tuple[str, ...]
    options: dict


@dataclass(frozen=True)
class ModelOptions:
    """--model, --device, --dtype and --allow-pickle (:func:`regionedit.cli.common.add_model_options`)."""

    task: str | None = None


def arg(*flags: str, **options) -> Arg:
    return Arg(flags, options)


def _tiny(help: str) -> Arg:
    return arg("--tiny", action="store_true", help=help)


JSON = arg("--json", help="write the result to this file")


def print_json(result: dict, args: argparse.Namespace) -> None:
    from regionedit.bench import write_json

    print(write_json(result, args.json))


@dataclass(frozen=True)
class Bench:
    help: str
    target: str  # "module:function", called through ``call``
    call: Callable[[Callable[..., dict], argparse.Namespace], dict]
    arguments: tuple[Arg | ModelOptions, ...] = ()
    output: Callable[[dict, argparse.Namespace], None] = field(default=print_json)


# ------------------------------------------------------------------- how the arguments reach each one
def _inversion(bench, args: argparse.Namespace) -> dict:
    from regionedit.bench.inversion import SD15_RANDOM

    check_nonnegative(steps=args.steps)
    model = args.model or ("tiny/sd" if args.tiny else SD15_RANDOM)
    return bench(model, device(args), dtype(args), size=args.size, steps=args.steps, batch_size=args.batch_size)


def _discover(bench, args: argparse.Namespace) -> dict:
    from regionedit.bench.discover import CELEBAHQ_RANDOM

    model = args.model or ("tiny/pixel-ddpm" if args.tiny else CELEBAHQ_RANDOM)
    return bench(model, device(args), k=args.k, complement_rank=args.r, max_iterations=args.max_iterations, jvp=args.jvp)


def _rdm(bench, args: argparse.Namespace) -> dict:
    model = args.model or ("tiny/sd" if args.tiny else "toy/scenes-t2i")
    return bench(model, args.segmenter or companion(model, 0), args.clip or companion(model, 1), device(args),
                 steps=args.steps)


def _p2p(bench, args: argparse.Namespace) -> dict:
    from regionedit.bench.inversion import SD15_RANDOM

    check_nonnegative(steps=args.steps, skip=args.skip)
    if args.skip >= args.steps:
        raise RegionEditError(f"--skip must be smaller than --steps ({args.steps}), got {args.skip}")
    if args.samples < 2 or args.repeats < 1:
        raise RegionEditError(f"--samples must be ≥ 2 and --repeats ≥ 1, got {args.samples} and {args.repeats}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = args.model or ("tiny/sd" if args.tiny else SD15_RANDOM)
    return bench(model, device(args), dtype(args), steps=args.steps, skip=args.skip, repeats=args.repeats,
                 samples=args.samples)


def _batch(bench, args: argparse.Namespace) -> dict:
    processes = tuple(int(p) for p in pair(args.processes, "--processes", 0, int))
    return bench(processes, args.n, args.model, args.steps, args.batch_size, args.method)


def _fuzz(bench, args: argparse.Namespace) -> dict:
    check_positive("--every", args.every)
    return bench(args.keep, every=args.every, log=None if args.quiet else (lambda m: print(m, file=sys.stderr)))


def _print_total(result: dict, args: argparse.Namespace) -> None:
    from regionedit.bench import write_json

    write_json(result, args.json)
    print(json.dumps(result["total"], sort_keys=True))


def _toymodels(bench, args: argparse.Namespace) -> dict:
    from regionedit.bench.toymodels import MEASURED, update_cards
    from regionedit.models.loading import embedded_components, embedded_models

    names = args.names or [n for n in MEASURED if n in {**embedded_models(), **embedded_components()}]
    if not names:
        raise RegionEditError(f"no embedded toy models in this installation (embedded: {', '.join(embedded_models()) or 'none'})")
    if args.update_cards and args.split != "benchmark":
        raise RegionEditError("--update-cards records the bars, which are measured on the benchmark split")
    result = bench(names, device_name(args), args.n, args.split)
    if args.update_cards:
        update_cards(result)
    return result


def _quality(bench, args: argparse.Namespace) -> dict:
    from regionedit.bench.quality import make_method

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RegionEditError(f"--option must be key=value, got {item!r}")
        options[key] = _parse_value(value)
    method = make_method(args.method, args.world, options)
    result = bench(args.world, method, count=args.n, size=args.size, progress=not args.quiet, split=args.split)
    return {**result, "options": options}  # the JSON says how the method was set


def _parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _print_with_markdown(result: dict, args: argparse.Namespace) -> None:
    print_json(result, args)
    if args.md:
        from regionedit.bench.quality import markdown_table
        from regionedit.images import atomic_write

        atomic_write(args.md, lambda tmp: tmp.write_text(markdown_table(result)))


# ----------------------------------------------------------------------------------------- the table
BENCHES: dict[str, Bench] = {
    "inversion": Bench(
        "step-by-step vs timestep-batched inversion, same run", "regionedit.bench.inversion:bench_inversion", _inversion, (
            _tiny("use the tiny SD-like model (default: random SD-1.5-sized)"), ModelOptions(),
            arg("--size", type=int, help="image side in pixels (default: the model's native size)"),
            arg("--steps", type=int, default=100), arg("--batch-size", type=int, default=16), JSON)),
    "discover": Bench(
        "seconds to find RBE directions at one timestep", "regionedit.bench.discover:bench_discover", _discover, (
            _tiny("the tiny pixel DDPM (default: random DDPM-CelebAHQ-256-sized)"), ModelOptions(),
            arg("--k", type=int, default=3), arg("--r", type=int, default=8),
            arg("--max-iterations", type=int, default=50),
            arg("--jvp", choices=("finite-difference", "autodiff"), default="finite-difference"), JSON)),
    "directions": Bench(
        "toy faces: locality, factors moved and transfer of RBE/JICA directions (with --json, resumable: "
        "each face is kept in JSON.partial.jsonl until the run ends)", "regionedit.bench.discover:bench_directions",
        lambda bench, a: bench(a.model, device(a), method=a.method, count=a.n, strength=a.strength,
                               max_iterations=a.max_iterations, split=a.split, complement_rank=a.r, timestep=a.timestep,
                               progress_file=f"{a.json}.partial.jsonl" if a.json else None), (
            ModelOptions(task="rbe"), arg("--method", choices=("rbe", "jica"), default="rbe"),
            arg("--n", type=int, default=50, help="faces (default 50)"), arg("--strength", type=float, default=30.0),
            arg("--max-iterations", type=int, default=50),
            arg("--r", type=int, default=defaults.RBE_COMPLEMENT_RANK, help="RBE: the complement rank r (default %(default)s)"),
            arg("--timestep", type=int, default=defaults.HSPACE_TIMESTEP,
                help="the timestep the directions are found at and applied from (default %(default)s)"), JSON,
            arg("--split", choices=("benchmark", "validation"), default="benchmark",
                help="validation: for choosing settings (e.g. the strength); figures are reported on the benchmark split"))),
    "rdm": Bench(
        "RDM's cost over plain sampling, same model and steps", "regionedit.bench.rdm:bench_rdm", _rdm, (
            _tiny("tiny random SD, CLIPSeg and CLIP"), ModelOptions(), arg("--segmenter"), arg("--clip"),
            arg("--steps", type=int, default=50), JSON)),
    "zone": Bench(
        "seconds per ZONE edit, with a breakdown", "regionedit.bench.zone:bench_zone",
        lambda bench, a: bench(a.tiny, device(a), steps=a.steps), (
            _tiny("tiny models on the CPU (default: real sizes, random weights)"), arg("--device", default="auto"),
            arg("--steps", type=int, default=20), JSON)),
    "p2p": Bench(
        "Prompt-to-Prompt's cost over the plain edit-friendly edit, and diversity", "regionedit.bench.p2p:bench_p2p", _p2p, (
            _tiny("tiny/sd (default: random SD-1.5-sized)"), ModelOptions(), arg("--steps", type=int, default=100),
            arg("--skip", type=int, default=12),
            arg("--repeats", type=int, default=3, help="timed runs of each edit (the best is kept)"),
            arg("--samples", type=int, default=3, help="noise-map draws for the diversity measurement"),
            arg("--threads", type=int, help="torch CPU threads (default: torch's)"), JSON)),
    "batch": Bench(
        "items per second of `regionedit batch`, 1 vs N processes", "regionedit.bench.batch:bench_batch", _batch, (
            arg("--processes", default="1,2"),
            arg("--method", choices=("zone", "rbe"), default="zone",
                help="zone: toy-scene instructions; rbe: eye directions on toy faces"),
            arg("--n", type=int, default=32, help="edits in the manifest"),
            arg("--model", help="default: tiny/ip2p (zone), toy/faces-ddpm (rbe)"),
            arg("--steps", type=int, default=20, help="ZONE sampling steps"),
            arg("--batch-size", type=int, default=4, help="ZONE edits sampled together"), JSON)),
    "fuzz": Bench(
        "bad and odd inputs through every entry point; counts tracebacks", "regionedit.bench.fuzz:run_campaign", _fuzz, (
            arg("--every", type=int, default=1, help="run every N-th case of each category (default: all)"),
            arg("--keep", help="run in this folder and keep it (default: a temporary folder, removed)"), JSON),
        output=_print_total),
    "training": Bench(
        "time of a training step of each toy model", "regionedit.bench.training:bench_training",
        lambda bench, a: bench(device(a), a.batch, a.repeats, a.compile), (
            arg("--batch", type=int, default=256), arg("--repeats", type=int, default=5),
            arg("--compile", action="store_true", help="also time the steps with torch.compile"),
            arg("--device", default="auto"), JSON)),
    "toymodels": Bench(
        "the quality bars of the embedded toy models", "regionedit.bench.toymodels:bench_toymodels", _toymodels, (
            arg("names", nargs="*", help="toy/… models or model folders (default: every embedded one)"),
            arg("--n", type=int, help="samples per measurement (default: each bar's own)"),
            arg("--device", default="auto"), JSON,
            arg("--update-cards", action="store_true", help="write each measurement into the model's card.json"),
            arg("--split", choices=("benchmark", "validation"), default="benchmark",
                help="validation: for choosing settings (the bars are judged on the benchmark split)"))),
    "toyworld": Bench(
        "toy-world rendering speed (images per second)", "regionedit.bench.toyworld:bench_rendering",
        lambda bench, a: bench(a.n, a.size, str(device(a)), threads=a.threads), (
            arg("--n", type=int, default=2000, help="images per world"), arg("--size", type=int, default=64),
            arg("--threads", type=int, default=1, help="CPU threads (default 1)"), arg("--device", default="cpu"), JSON)),
    "quality": Bench(
        "run a method over a toy world's benchmark split", "regionedit.bench.quality:run_quality", _quality, (
            arg("--world", required=True, choices=("faces", "scenes")),
            arg("--method", required=True, help="identity, oracle, or a registered method"),
            arg("--option", action="append", default=[], help="KEY=VALUE passed to the method (repeatable)"),
            arg("--n", type=int, default=200, help="benchmark edits (default 200)"), arg("--size", type=int, default=64),
            JSON, arg("--md", help="also write a markdown table"),
            arg("--split", choices=("benchmark", "validation"), default="benchmark",
                help="validation: for choosing settings; figures are reported on the benchmark split")),
        output=_print_with_markdown),
}


def add_bench(commands) -> None:
    benches = add_group(commands, "bench", "speed and quality benchmarks (JSON)", "bench")
    for name, bench in BENCHES.items():
        parser = add_command(benches, name, bench.help, cmd_bench)
        for argument in bench.arguments:
            if isinstance(argument, ModelOptions):
                add_model_options(parser, task=argument.task)
            else:
                parser.add_argument(*argument.flags, **argument.options)


def cmd_bench(args: argparse.Namespace) -> int:
    bench = BENCHES[args.bench]
    module, _, function = bench.target.partition(":")
    result = bench.call(getattr(importlib.import_module(module), function), args)
    bench.output(result, args)
    return 0
