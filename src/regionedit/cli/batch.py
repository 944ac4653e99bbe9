"""`regionedit batch`: edit every item of a JSONL manifest, resumably, locally or on Ray."""

from __future__ import annotations

import argparse
import sys

from regionedit.cli.common import add_command, device_name


def add_batch(commands) -> None:
    parser = add_command(commands, "batch", "edit every item of a JSONL manifest (resumable)", cmd_batch)
    parser.add_argument("manifest")
    parser.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local (default; run under `accelerate launch` for several processes) or ray")
    parser.add_argument("--batch-size", type=int, default=8, help="ZONE items of one model sampled together")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (--engine ray)")
    parser.add_argument("--model", help="model for lines that name none")
    parser.add_argument("--device", default="auto")


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_batch(args: argparse.Namespace) -> int:
    from regionedit import batch

    device = device_name(args)
    if args.engine == "ray":
        summary = batch.run_ray(args.manifest, args.out, device, args.batch_size, args.model, workers=args.workers, log=_log)
    else:
        summary = batch.run_local(args.manifest, args.out, device, args.batch_size, args.model, progress=not args.quiet,
                                  log=_log)
    if batch._rank_and_size()[0] == 0:
        failed = "".join(f"\n  {k}: {v}" for k, v in summary["failed"].items())
        print(f"{summary['done']}/{summary['items']} done, {len(summary['failed'])} failed, {len(summary['pending'])} pending, "
              f"{len(summary['malformed_lines'])} malformed lines skipped{failed}")
    return 0
