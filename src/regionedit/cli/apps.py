"""The commands for looking around: `regionedit serve` (the web editor), `demo` (a gallery) and `models`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regionedit.cli.common import add_command, note
from regionedit.errors import RegionEditError

HUB_MODELS = (
    "Any diffusers model also works with --model:\n"
    "  a hub id such as google/ddpm-ema-celebahq-256 or stable-diffusion-v1-5/stable-diffusion-v1-5\n"
    "  (read from the Hugging Face cache; downloaded when the hub is reachable, never when HF_HUB_OFFLINE=1),\n"
    "  or a local folder saved with save_pretrained. Weights must be safetensors unless --allow-pickle."
)


def add_serve(commands) -> None:
    parser = add_command(commands, "serve", "the web editor (Gradio) on this machine", cmd_serve)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--out", help="folder for the results (default: a new temporary folder)")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise RegionEditError("the web editor needs Gradio: pip install 'regionedit[app]' (or run `make serve`)") from None
    from regionedit.app import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        note(f"serving on {args.host}: anyone who can reach this address can use the editor")
    print(f"regionedit editor on http://{args.host}:{args.port} (Ctrl+C to stop)")
    serve(args.host, args.port, args.out)
    return 0


def add_models(commands) -> None:
    parser = add_command(commands, "models", "list embedded and tiny models; how to use hub ids and folders", cmd_models)
    parser.add_argument("--json", action="store_true")


def cmd_models(args: argparse.Namespace) -> int:
    from regionedit.bench.toymodels import model_status
    from regionedit.models.loading import embedded_components, embedded_models
    from regionedit.models.tiny import TINY_BUILDERS

    embedded = {name: str(path) for name, path in embedded_models().items()}
    tiny = {name: (builder.__doc__ or "").strip().splitlines()[0] for name, builder in TINY_BUILDERS.items()}
    if args.json:
        print(json.dumps({"embedded": embedded, "tiny": tiny}, indent=2))
        return 0
    print("Embedded toy-world models (offline, shipped in the package):")
    print("\n".join(f"  {n:26s} {model_status(Path(path))}" for n, path in embedded.items()) or "  none in this version")
    for name, path in embedded_components().items():
        users = [n for n, folder in embedded.items() if (Path(folder) / "vae").resolve() == path.resolve()]
        print(f"  {name:26s} {model_status(path)} (the autoencoder of {', '.join(users) or 'no model'})")
    print("Tiny random models (built on first use, for tests and benchmarks; outputs are noise):")
    for name, doc in tiny.items():
        print(f"  {name:18s} {doc}")
    print(HUB_MODELS)
    return 0


def add_demo(commands) -> None:
    parser = add_command(commands, "demo", "run the methods on sample images and write an HTML gallery", cmd_demo)
    parser.add_argument("--out", default="demo-output", help="output folder (default demo-output)")


def cmd_demo(args: argparse.Namespace) -> int:
    from regionedit.demo import run_demo

    run_demo(args.out, progress=not args.quiet)
    return 0
