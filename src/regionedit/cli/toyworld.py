"""`regionedit toyworld export|train`: the procedural toy worlds' splits and the networks trained on them."""

from __future__ import annotations

import argparse

from regionedit.cli.common import add_command, add_group, check_positive, device_name


def add_toyworld(commands) -> None:
    toys = add_group(commands, "toyworld", "the procedural toy worlds: export splits, train their networks", "toyworld")
    export = add_command(toys, "export", "write a split as PNGs, masks and a JSONL manifest", cmd_export, loads_models=False)
    export.add_argument("world", choices=("faces", "scenes"))
    export.add_argument("--n", type=int, required=True, help="number of items")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--split", default="benchmark", choices=("train", "validation", "benchmark"))
    export.add_argument("--size", type=int, default=64)

    ship = add_command(toys, "ship", "copy a trained folder into the embedded weights, stored against the models "
                       "it is made from (scenes-clipseg: the toy CLIP's text tower; scenes-instruct-remove: an int8 "
                       "difference from scenes-instruct)", cmd_ship, loads_models=False)
    ship.add_argument("name")
    ship.add_argument("folder", help="the trained folder (a --out of `toyworld train`); left as it is")
    ship.add_argument("--weights", help="the embedded weights folder (default: the package's)")

    train = add_command(toys, "train", "reproduce an embedded network: probe-faces, probe-scenes, scenes-clip, "
                        "scenes-clipseg, faces-ddpm, scenes-t2i, scenes-instruct, scenes-instruct-remove", cmd_train)
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
    train.add_argument("--decoder-only", action="store_true", help="scenes-vae or faces-vae --resume: tune the decoder alone (latents unchanged)")
    train.add_argument("--no-evaluate", action="store_true", help="skip the bar measurement at the end (bench toymodels does it)")
    train.add_argument("--edit-weight", type=float, help="latent instruct models: loss weight inside the edited region (default 1)")
    train.add_argument("--min-snr-gamma", type=float,
                       help="latent diffusion models: weigh the loss by min-SNR-γ (e.g. 5; default: uniform)")
    train.add_argument("--dice-weight", type=float, help="scenes-clipseg: weight of a soft-Dice term beside the BCE (default 0)")
    train.add_argument("--absent-weight", type=float,
                       help="scenes-clipseg: weight of the BCE on an empty mask's highest logit (absent objects; default 0)")
    train.add_argument("--tune-text", action="store_true",
                       help="scenes-clipseg: fine-tune the CLIP text tower too (the paper freezes both towers)")
    train.add_argument("--tune-vision", action="store_true",
                       help="scenes-clipseg: fine-tune the CLIP vision tower too (the paper freezes both towers)")
    train.add_argument("--kind-weight", type=float,
                       help="scenes-clipseg with --tune-vision: weight of an auxiliary per-patch object-kind loss on the vision tower")
    train.add_argument("--kind-pretraining", action="store_true",
                       help="scenes-clipseg: train only the vision tower, on a dense object-kind task (a stage before "
                            "the segmentation runs)")
    train.add_argument("--phrases-per-scene", type=int,
                       help="scenes-clipseg: name each scene of a batch by K phrases (batch / K scenes; default 1)")
    train.add_argument("--bare-share", type=float,
                       help="scenes-clipseg: probability of naming a present object by its bare kind ('the ball'; default 1/3)")
    train.add_argument("--absent-bare-share", type=float,
                       help="scenes-clipseg: the same for a phrase naming an absent kind (default 1/3)")
    train.add_argument("--learning-rate", type=float,
                       help="peak learning rate (default: the documented setting; lower it to anneal a resumed run)")


def cmd_export(args: argparse.Namespace) -> int:
    from regionedit.toyworld.export import export

    check_positive("--n", args.n)
    path = export(args.world, args.n, args.out, split=args.split, size=args.size, log=None if args.quiet else print)
    print(f"wrote {path}")
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    from regionedit.toyworld.train import ship

    ship(args.name, args.folder, weights=args.weights, log=None if args.quiet else print)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from regionedit.toyworld.models import Speed
    from regionedit.toyworld.train import train

    train(args.name, out=args.out, steps=args.steps, device=device_name(args),
          smoke=args.smoke, log=None if args.quiet else print, weights=args.weights, batch=args.batch,
          minutes=args.minutes, workers=args.workers, resume=args.resume,
          speed=Speed(args.pool, args.refresh_every, args.compile), edit_weight=args.edit_weight,
          evaluate=not args.no_evaluate, decoder_only=args.decoder_only,
          dice_weight=args.dice_weight, absent_weight=args.absent_weight,
          learning_rate=args.learning_rate, tune_text=args.tune_text, tune_vision=args.tune_vision,
          phrases_per_scene=args.phrases_per_scene, kind_weight=args.kind_weight, bare_share=args.bare_share,
          absent_bare_share=args.absent_bare_share, kind_pretraining=args.kind_pretraining,
          min_snr_gamma=args.min_snr_gamma)
    return 0
