"""`regionedit toyworld train NAME`: reproduce an embedded toy-world network with its documented
settings, measure it and write it with its model card (``card.json``).

Probes: ``probe-faces``, ``probe-scenes``. Models (see :mod:`regionedit.toyworld.models`):
``scenes-clip`` first (its text tower is the scene diffusion models' text encoder, linked, stored
once), then ``scenes-clipseg``, ``faces-ddpm``, ``scenes-t2i``, ``scenes-instruct``, and
``scenes-instruct-remove`` (tuned from ``scenes-instruct``). A run stops after ``steps`` or after
``minutes`` of wall-clock time, whichever comes first; the card records the steps run and the
command that repeats them. ``--smoke`` runs two tiny steps and a tiny evaluation.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from pathlib import Path

import torch

from regionedit import __version__
from regionedit.errors import RegionEditError
from regionedit.images import atomic_write
from regionedit.models import stored_once
from regionedit.toyworld import probes

PROBES = {"probe-faces": {"world": "faces", "steps": 4000}, "probe-scenes": {"world": "scenes", "steps": 4000}}
MODELS = {
    "scenes-clip": {"kind": "clip", "steps": 6000, "batch": 256, "learning_rate": 5e-4},
    # dice_weight 1: bench/results/clipseg-ablation-dice-cpu.json (validation IoU 0.45 vs 0.01 after 104 more steps)
    "scenes-clipseg": {"kind": "clipseg", "steps": 8000, "batch": 128, "learning_rate": 3e-4, "needs": "scenes-clip",
                       "dice_weight": 1.0},
    "faces-ddpm": {"kind": "faces", "steps": 40000, "batch": 256, "learning_rate": 4e-4},
    "scenes-vae": {"kind": "vae", "steps": 6000, "batch": 32, "learning_rate": 1e-3},
    # a candidate for RBE/JICA at 1/16 of faces-ddpm's cost per sample: the autoencoder tuned from
    # scenes-vae on faces (scenes-vae reconstructs faces at 18 dB), an unconditional latent UNet on it
    "faces-vae": {"kind": "vae", "world": "faces", "steps": 3000, "batch": 32, "learning_rate": 1e-3,
                  "needs": "scenes-vae", "start_from": "scenes-vae"},
    "faces-ldm": {"kind": "faces-latent", "steps": 20000, "batch": 64, "learning_rate": 1e-3, "needs": "faces-vae"},
    # latent models (regionedit.toyworld.latent): text tower of scenes-clip, autoencoder scenes-vae
    "scenes-t2i": {"kind": "t2i", "steps": 20000, "batch": 64, "learning_rate": 1e-3, "needs": "scenes-clip",
                   "also_needs": "scenes-vae"},
    # edit_weight 4: bench/results/latent-ablation-edit-weight-cpu.json (validation success 0.60 vs 0.48 at 1,445 steps)
    "scenes-instruct": {"kind": "instruct", "steps": 20000, "batch": 64, "learning_rate": 1e-3, "needs": "scenes-clip",
                        "also_needs": "scenes-vae", "edit_weight": 4.0},
    "scenes-instruct-remove": {"kind": "instruct", "steps": 4000, "batch": 64, "learning_rate": 3e-4,
                               "needs": "scenes-instruct", "also_needs": "scenes-vae", "remove_share": 0.6,
                               "edit_weight": 4.0},
}
TRAINABLE = {**PROBES, **MODELS}
LATENT_KINDS = ("t2i", "instruct", "faces-latent")
WEIGHT_BUDGET_MB = 40


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def train(name: str, out: str | Path | None = None, steps: int | None = None, device: str | None = None,
          smoke: bool = False, log=print, weights: str | Path | None = None, batch: int | None = None,
          minutes: float | None = None, workers: int | None = None, resume: bool = False, speed=None,
          edit_weight: float | None = None, evaluate: bool = True, decoder_only: bool = False,
          dice_weight: float | None = None, absent_weight: float | None = None,
          learning_rate: float | None = None, tune_text: bool = False, tune_vision: bool = False,
          phrases_per_scene: int | None = None, kind_weight: float | None = None,
          bare_share: float | None = None, absent_bare_share: float | None = None,
          kind_pretraining: bool = False, min_snr_gamma: float | None = None) -> Path:
    """Train ``name``; prerequisites are read from ``weights`` (default: the package's weights).
    ``resume``: start from the weights already in the output folder (a finished run or a checkpoint;
    the optimiser starts afresh) and add this run to the card's history. ``speed``: a
    :class:`regionedit.toyworld.training.Speed` for the diffusion models (pool, compile). ``edit_weight``:
    the latent instruct models' loss weight inside the edited region (default: the spec's, else 1).
    ``dice_weight``: scenes-clipseg's soft-Dice term beside the BCE (default: the spec's, else 0);
    ``absent_weight``: its hard-negative term on empty masks' highest logit (default: the spec's, else 0).
    ``tune_text``, ``tune_vision`` (scenes-clipseg): fine-tune that CLIP tower too (the paper freezes both).
    ``phrases_per_scene`` (scenes-clipseg): each step's batch names batch / K scenes K times each (default 1).
    ``kind_weight`` (scenes-clipseg with ``tune_vision``): weight of the vision tower's auxiliary
    per-patch kind loss (default: the spec's, else 0; see :func:`~regionedit.toyworld.training.train_clipseg`).
    ``bare_share`` (scenes-clipseg): the probability that a present object is named by its bare kind
    ("the ball"; default: a third, like each of the two coloured styles); ``absent_bare_share`` the
    same for a phrase naming an absent kind (the absent-empty term's negatives). ``kind_pretraining``
    (scenes-clipseg): train the vision tower alone on the dense kind task, the decoder untouched.
    ``min_snr_gamma`` (latent diffusion models): weigh the loss by min-SNR-γ (default: uniform).
    ``learning_rate``: replaces the spec's (for example a lower rate to anneal a resumed run).
    ``evaluate=False``: leave the bar to `regionedit bench toymodels` (runs of an ablation are
    compared on the validation split; only the chosen one is measured on the benchmark split).
    ``decoder_only`` (scenes-vae with ``resume``): tune the decoder alone, so the latents, and the
    diffusion models trained on them, stay valid (as SD's ft-MSE autoencoder was made)."""
    if decoder_only and not (MODELS.get(name, {}).get("kind") == "vae" and resume):
        raise RegionEditError("decoder_only tunes an existing autoencoder: use it with scenes-vae or faces-vae and resume "
                              "(CLI: --decoder-only --resume)")
    for setting, value in (("dice_weight", dice_weight), ("absent_weight", absent_weight), ("tune_text", tune_text or None),
                           ("tune_vision", tune_vision or None), ("phrases_per_scene", phrases_per_scene),
                           ("kind_weight", kind_weight), ("bare_share", bare_share),
                           ("absent_bare_share", absent_bare_share), ("kind_pretraining", kind_pretraining or None)):
        if value is not None and MODELS.get(name, {}).get("kind") != "clipseg":
            raise RegionEditError(f"{setting} is a scenes-clipseg setting (CLI: --{setting.replace('_', '-')})")
    if name not in TRAINABLE:
        raise RegionEditError(f"unknown trainable model {name!r} (trainable: {', '.join(TRAINABLE)})")
    log = log or (lambda message: None)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if name in PROBES:
        return _train_probe(name, out, steps, device, smoke, log)
    from regionedit.toyworld.training import Budget, Speed

    spec = MODELS[name]
    weights = Path(weights) if weights is not None else probes.WEIGHTS_DIR
    folder = Path(out) if out is not None else weights / name
    for needs in (spec.get("needs"), spec.get("also_needs")):
        if needs and not (weights / needs / "card.json").exists():
            raise RegionEditError(f"{name} builds on {needs}: train it first (`regionedit toyworld train {needs}`)")
    if kind_weight and not tune_vision:
        raise RegionEditError("kind_weight trains the vision tower: add tune_vision (CLI: --kind-weight W --tune-vision)")
    if phrases_per_scene is not None and phrases_per_scene < 1:
        raise RegionEditError(f"phrases_per_scene must be at least 1, got {phrases_per_scene} (CLI: --phrases-per-scene)")
    for setting, share in (("bare_share", bare_share), ("absent_bare_share", absent_bare_share)):
        if share is not None and not 0 <= share <= 1:
            raise RegionEditError(f"{setting} is a probability in [0, 1], got {share} (CLI: --{setting.replace('_', '-')})")
    if min_snr_gamma is not None and (MODELS.get(name, {}).get("kind") not in LATENT_KINDS or not min_snr_gamma > 0):
        raise RegionEditError(f"min_snr_gamma is a positive setting of the latent diffusion models "
                              f"({', '.join(n for n, s in MODELS.items() if s['kind'] in LATENT_KINDS)}), got {min_snr_gamma}")
    if learning_rate is not None and not learning_rate > 0:
        raise RegionEditError(f"learning_rate must be positive, got {learning_rate} (CLI: --learning-rate)")
    budget = Budget(2 if smoke else (steps or spec["steps"]), None if smoke or minutes is None else 60 * minutes)
    batch = 4 if smoke else (batch or spec["batch"])
    workers = (2 if device.type == "cuda" else 0) if workers is None else workers
    previous = _progress(folder) if resume else None
    if resume and previous is None:
        raise RegionEditError(f"nothing to resume in {folder}: no earlier run or checkpoint of {name}")
    context = {"name": name, "spec": spec, "folder": folder, "weights": weights, "budget": budget, "batch": batch,
               "device": device, "workers": workers, "smoke": smoke, "log": log, "resume": resume,
               "history": (previous.get("history") or [previous]) if resume else [],
               "speed": Speed() if smoke or speed is None else speed,
               "edit_weight": edit_weight if edit_weight is not None else spec.get("edit_weight", 1.0),
               "dice_weight": dice_weight if dice_weight is not None else spec.get("dice_weight", 0.0),
               "absent_weight": absent_weight if absent_weight is not None else spec.get("absent_weight", 0.0),
               "kind_weight": kind_weight if kind_weight is not None else spec.get("kind_weight", 0.0),
               "decoder_only": decoder_only, "tune_text": tune_text, "tune_vision": tune_vision,
               "phrases_per_scene": 1 if phrases_per_scene is None else phrases_per_scene, "bare_share": bare_share,
               "absent_bare_share": absent_bare_share, "kind_pretraining": kind_pretraining,
               "learning_rate": learning_rate if learning_rate is not None else spec["learning_rate"],
               "min_snr_gamma": min_snr_gamma}
    began = time.perf_counter()
    torch.manual_seed(0)  # before any model is built: its initial weights are part of the recipe
    trainer = {"clip": _clip, "clipseg": _clipseg, "faces": _faces, "vae": _vae, "t2i": _t2i,
               "instruct": _instruct, "faces-latent": _faces_latent}[spec["kind"]]
    settings, steps_run, evaluate_run = trainer(context)
    wall = round(time.perf_counter() - began, 1)
    try:
        if not evaluate:
            raise _NotEvaluated
        evaluation = evaluate_run()
    except _NotEvaluated:
        evaluation = {"note": "not measured at the end of training (regionedit bench toymodels)"}
    except Exception as exc:  # the weights are saved; measure them later with `regionedit bench toymodels`
        log(f"{name}: evaluation failed: {exc}\n{traceback.format_exc()}")
        evaluation = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        from regionedit.toyworld.bars import MAIN_INSTRUCT, card_evaluation, meets_bar

        main = card_evaluation(weights / MAIN_INSTRUCT.split("/")[1])
        evaluation["meets_bar"] = meets_bar(f"toy/{name}", evaluation, main)
    command = f"regionedit toyworld train {name} --steps {steps_run} --batch {batch}" + _speed_flags(context["speed"]) \
        + _recipe_flags(context) + (" --resume" if resume else "")
    run = {"steps": steps_run, "batch": batch, "learning_rate": context["learning_rate"], "device": str(device),
           "hardware": hardware(device), "train_seconds": wall,
           "stopped_by": budget.stopped_by, "torch": torch.__version__,
           "pool": context["speed"].pool, "refresh_every": context["speed"].refresh_every,
           "compile": context["speed"].compile, "command": command}
    history = context["history"] + [run]
    card = {
        "name": name, "settings": {"steps": sum(h.get("steps", 0) for h in history), "batch": batch, "seed": 0, **settings},
        "history": history, "hardware": run["hardware"], "regionedit": __version__, "evaluation": evaluation,
        "smoke": smoke, "reproduce": " && ".join(h.get("command", "?") for h in history),
    }
    _write_json(folder / "card.json", card)
    (folder / "progress.json").unlink(missing_ok=True)
    log(f"{name}: wrote {folder} ({_size_mb(folder):.1f} MB); evaluation {json.dumps(evaluation, default=str)}")
    return folder


def _speed_flags(speed) -> str:
    flags = f" --pool {speed.pool} --refresh-every {speed.refresh_every}" if speed.pool else ""
    return flags + (" --compile" if speed.compile else "")


class _NotEvaluated(Exception):
    pass


def _recipe_flags(c: dict) -> str:
    weight = c.get("edit_weight", 1.0)
    flags = f" --edit-weight {weight:g}" if c.get("spec", {}).get("kind") == "instruct" and weight != 1.0 else ""
    if c.get("spec", {}).get("kind") == "clipseg":
        flags += "".join(f" --{setting.replace('_', '-')} {c[setting]:g}"
                         for setting in ("dice_weight", "absent_weight", "kind_weight") if c.get(setting))
        flags += f" --phrases-per-scene {c['phrases_per_scene']}" if c.get("phrases_per_scene", 1) != 1 else ""
        flags += "".join(f" --{setting.replace('_', '-')} {c[setting]:g}"
                         for setting in ("bare_share", "absent_bare_share") if c.get(setting) is not None)
    flags += f" --min-snr-gamma {c['min_snr_gamma']:g}" if c.get("min_snr_gamma") is not None else ""
    documented_rate = c.get("spec", {}).get("learning_rate")
    if c.get("learning_rate", documented_rate) != documented_rate:
        flags += f" --learning-rate {c['learning_rate']:g}"
    switches = ("decoder_only", "tune_text", "tune_vision", "kind_pretraining")
    return flags + "".join(f" --{switch.replace('_', '-')}" for switch in switches if c.get(switch))


def _progress(folder: Path) -> dict | None:
    """What the folder holds: the card of a finished run, or the progress note of a checkpoint."""
    for file in ("progress.json", "card.json"):  # a newer unfinished run first
        if (folder / file).exists():
            return json.loads((folder / file).read_text())
    return None


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))


def _size_mb(folder: Path) -> float:
    """Bytes of the regular files below ``folder``, not following symlinks (shared folders count once)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if not os.path.islink(os.path.join(root, f)))
    return total / 2**20


def weights_size_mb(weights: Path = probes.WEIGHTS_DIR) -> float:
    """Size of the shipped weights (the issue's budget: 40 MB), counting shared folders once."""
    return _size_mb(weights)


# --------------------------------------------------------------------------------- shipping
STORED_ONCE = {  # how a model is stored against another embedded one when shipped (models.stored_once)
    # the toy CLIPSeg keeps scenes-clip's text tower frozen: stored once, in scenes-clip
    "scenes-clipseg": ("", "scenes-clip", {"clip.text_model.": "text_model.", "clip.text_projection.": "text_projection."}),
    # MagicBrush-like: the instruct model's weights plus an int8 difference (3.1 MB instead of 6.2)
    "scenes-instruct-remove": ("unet", "scenes-instruct/unet", None),
}


def ship(name: str, source: str | Path, weights: str | Path | None = None, log=None) -> Path:
    """Copy a trained folder (a ``--out`` of ``train``) into the embedded weights as ``name``, stored
    against the models it is made from (:data:`STORED_ONCE`); links to shared parts (``../scenes-clip``)
    are kept as links. The source folder is left as it was, unless it is the shipped folder itself
    (a model trained in place), which is then rewritten in its stored form."""
    import shutil

    log = log or (lambda message: None)
    weights = Path(weights) if weights is not None else probes.WEIGHTS_DIR
    source = Path(source)
    if name not in MODELS:
        raise RegionEditError(f"unknown trainable model {name!r} (trainable: {', '.join(MODELS)})")
    if not (source / "card.json").is_file():
        raise RegionEditError(f"{source} holds no trained {name} (no card.json)")
    if stored_once.stores_once(source) or stored_once.stores_once(source / "unet"):
        raise RegionEditError(f"{source} is already stored against another model: ship the folder it was trained in")
    folder = weights / name  # may be the source itself (trained in place): then it is rewritten
    tmp, old = folder.with_name(f".{name}.ship"), folder.with_name(f".{name}.old")  # siblings: links stay valid
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, symlinks=True)
    (tmp / "progress.json").unlink(missing_ok=True)
    if name in STORED_ONCE:
        part, base, shared = STORED_ONCE[name]
        if shared is not None:
            saved = stored_once.save_shared(tmp / part, weights / base, shared)
            log(f"{name}: {saved:.1f} MB stored once in {base}")
        else:
            worst = stored_once.save_difference(tmp / part, weights / base)
            log(f"{name}: stored as {base} plus an int8 difference (largest weight error {worst:.1e})")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    log(f"{name}: shipped {folder} ({_size_mb(folder):.1f} MB; all embedded weights {weights_size_mb(weights):.1f} MB)")
    return folder


# --------------------------------------------------------------------------------- probes
def _train_probe(name: str, out, steps: int | None, device: torch.device, smoke: bool, log) -> Path:
    spec = PROBES[name]
    steps = 3 if smoke else (steps or spec["steps"])
    start = time.perf_counter()
    net, settings = probes.train_probe(spec["world"], steps=steps, device=device, log=log, log_every=max(1, steps // 40))
    report = probes.evaluate_probe(net, spec["world"], count=64 if smoke else 4000)
    card = {
        "name": name,
        "data": f"fresh renders of the {spec['world']} train split (seeds 0..{steps * settings['batch_size']}), "
                "with noise, blur and ±2 px shifts",
        "settings": settings,
        "hardware": hardware(device),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "regionedit": __version__,
        "torch": torch.__version__,
        "held_out": report,
        "reproduce": f"regionedit toyworld train {name}",
    }
    folder = Path(out) if out is not None else probes.WEIGHTS_DIR / name
    probes.save_probe(net, folder, card)
    log(f"{name}: held-out minimum accuracy {report['min_accuracy']:.3f}; wrote {folder}")
    return folder


# --------------------------------------------------------------------------------- models
def _checkpointer(c: dict, save):
    """``checkpoint(ema, steps)`` for the trainer: save the EMA weights as the model is shipped, with
    a progress note (steps so far) that ``--resume`` reads."""

    def checkpoint(ema, steps: int) -> None:
        save(ema)
        command = (f"regionedit toyworld train {c['name']} --steps {steps} --batch {c['batch']}" + _speed_flags(c["speed"])
                   + _recipe_flags(c) + (" --resume" if c["resume"] else ""))
        run = {"steps": steps, "batch": c["batch"], "command": command, "note": "checkpoint of an unfinished run"}
        _write_json(c["folder"] / "progress.json", {"history": c["history"] + [run]})

    return checkpoint


def _start_unet(c: dict, build):
    """A new UNet from ``build()``, or with ``--resume`` the one in the output folder (fp32)."""
    if not c["resume"]:
        return build()
    return stored_once.from_folder(type(build()), c["folder"] / "unet")


def _save_transformers(folder: Path, model, tokenizer) -> None:
    """fp16 weights and the tokenizer, written to a fresh folder then swapped in (a checkpoint
    that is interrupted never leaves a half-written model)."""
    _swap_in(folder, lambda tmp: (copy_half(model).save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


def copy_half(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module).to("cpu", torch.float16)


def _swap_in(folder: Path, write) -> None:
    import shutil

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    for note in ("card.json", "progress.json"):  # kept until this run writes its own
        if (folder / note).exists():
            (tmp / note).write_bytes((folder / note).read_bytes())
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists() or folder.is_symlink():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _save_pipeline(folder: Path, unet, text_from: Path | None, vae_from: Path | None = None) -> None:
    """A diffusers pipeline folder: fp16 UNet, the DDIM scheduler and, for text models, links to the
    text encoder and tokenizer of ``text_from`` and to the autoencoder ``vae_from`` (stored once)."""
    from regionedit.toyworld import latent
    from regionedit.toyworld.architectures import schedule

    def write(tmp: Path) -> None:
        copy_half(unet).save_pretrained(tmp / "unet")
        (latent.latent_schedule() if vae_from else schedule()).save_pretrained(tmp / "scheduler")
        pipeline = "StableDiffusionPipeline" if text_from else "LDMPipeline" if vae_from else "DDPMPipeline"
        index = {"_class_name": pipeline, "_diffusers_version": "0.42.1",
                 "unet": ["diffusers", type(unet).__name__], "scheduler": ["diffusers", "DDIMScheduler"]}
        links = []
        if text_from is not None:
            links += [("text_encoder", "transformers", "CLIPTextModel", text_from), ("tokenizer", "transformers", "CLIPTokenizer", text_from)]
        if vae_from is not None:
            links.append(("vae", "diffusers", "AutoencoderKL", vae_from))
        for part, library, cls, target in links:
            os.symlink(os.path.relpath(target, folder), tmp / part)
            index[part] = [library, cls]
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))

    _swap_in(folder, write)


def _clip(c: dict):
    from regionedit.metrics import ClipScorer
    from regionedit.toyworld.architectures import toy_tokenizer
    from regionedit.toyworld.evaluation import eval_clip
    from regionedit.toyworld.training import train_clip

    tokenizer = toy_tokenizer()
    checkpoint = _checkpointer(c, lambda ema: _save_transformers(c["folder"], ema, tokenizer))
    clip, tokenizer, steps = train_clip(c["budget"], c["batch"], c["learning_rate"], c["device"],
                                               c["workers"], c["log"], checkpoint)
    _save_transformers(c["folder"], clip, tokenizer)
    evaluate = lambda: eval_clip(ClipScorer(clip.float().eval(), tokenizer), 8 if c["smoke"] else 100)  # noqa: E731
    return {"data": "scenes of the train split with their captions", "ema": 0.999}, steps, evaluate


def _clipseg(c: dict):
    from transformers import AutoTokenizer, CLIPModel, CLIPSegForImageSegmentation

    from regionedit.segment import TextSegmenter
    from regionedit.toyworld.evaluation import eval_clipseg
    from regionedit.toyworld.training import train_clipseg

    source = c["weights"] / c["spec"]["needs"]
    clip = CLIPModel.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    checkpoint = _checkpointer(c, lambda ema: _save_transformers(c["folder"], ema, tokenizer))
    start = stored_once.from_folder(CLIPSegForImageSegmentation, c["folder"]) if c["resume"] else None
    model, steps = train_clipseg(clip, tokenizer, c["budget"], c["batch"], c["learning_rate"], c["device"],
                                 c["workers"], c["log"], checkpoint, start=start,
                                 dice_weight=c["dice_weight"], absent_weight=c["absent_weight"], tune_text=c["tune_text"],
                                 tune_vision=c["tune_vision"], phrases_per_scene=c["phrases_per_scene"],
                                 kind_weight=c["kind_weight"], bare_share=c["bare_share"],
                                 absent_bare_share=c["absent_bare_share"], kind_pretraining=c["kind_pretraining"])
    _save_transformers(c["folder"], model, tokenizer)
    segmenter = TextSegmenter(model.float().eval(), tokenizer, c["name"])
    evaluate = lambda: eval_clipseg(segmenter, 8 if c["smoke"] else 200)  # noqa: E731
    if c["kind_pretraining"]:
        return ({"data": "scenes of the train split with their per-pixel object kinds; the vision tower alone trained "
                         "on the dense kind task (decoder and text tower untouched)", "ema": 0.999}, steps, evaluate)
    data = "scenes of the train split with object phrases and their visible masks (absent kinds as negatives)"
    if c["phrases_per_scene"] > 1:
        data += f", {c['phrases_per_scene']} phrases per scene"
    if c["bare_share"] is not None:
        data += f", present objects named by their bare kind {c['bare_share']:.0%} of the time"
    if c["absent_bare_share"] is not None:
        data += f", absent kinds named bare {c['absent_bare_share']:.0%} of the time"
    if c["kind_weight"]:
        data += f", an auxiliary per-patch kind loss on the vision tower (weight {c['kind_weight']:g})"
    towers = ", ".join(f"{tower} tower {'fine-tuned' if c[f'tune_{tower}'] else 'frozen'}" for tower in ("text", "vision"))
    if not (c["tune_text"] or c["tune_vision"]):
        towers = "both frozen, as in the paper"
    return {"data": data + f"; CLIP towers from scenes-clip, {towers}", "ema": 0.999}, steps, evaluate


def _faces(c: dict):
    from regionedit.models import load_model
    from regionedit.toyworld.architectures import faces_unet
    from regionedit.toyworld.evaluation import eval_faces_ddpm
    from regionedit.toyworld.streams import FaceStream
    from regionedit.toyworld.training import train_diffusion

    checkpoint = _checkpointer(c, lambda ema: _save_pipeline(c["folder"], ema, None))
    unet, steps = train_diffusion(_start_unet(c, faces_unet), FaceStream(c["batch"]), c["budget"],
                                  c["learning_rate"], c["device"], c["workers"], c["log"], checkpoint,
                                  speed=c["speed"])
    _save_pipeline(c["folder"], unet, None)
    count, sampling_steps = (4, 5) if c["smoke"] else (256, 50)
    evaluate = lambda: eval_faces_ddpm(load_model(str(c["folder"]), device=c["device"]), count, sampling_steps)  # noqa: E731
    return {"data": "faces of the train split", "ema": 0.999}, steps, evaluate


def _text_model(weights: Path, device):
    from transformers import AutoTokenizer

    from regionedit.models.loading import load_text_encoder
    from regionedit.toyworld.streams import TextEncoding

    source = weights / "scenes-clip"
    encoder = load_text_encoder(source, whole_clip=True, dtype=torch.float32).to(device).eval().requires_grad_(False)
    return TextEncoding(encoder), AutoTokenizer.from_pretrained(source), source


def _vae(c: dict):
    from diffusers import AutoencoderKL

    from regionedit.toyworld import latent

    world, start_from = c["spec"].get("world", "scenes"), c["spec"].get("start_from")
    start = None
    if c["resume"] or start_from:
        source = c["folder"] if c["resume"] else c["weights"] / start_from
        start = AutoencoderKL.from_pretrained(source, torch_dtype=torch.float32)
    if c["decoder_only"]:
        start.encoder.requires_grad_(False)
        start.quant_conv.requires_grad_(False)

    def save(vae) -> None:
        _swap_in(c["folder"], lambda tmp: copy_half(vae).save_pretrained(tmp))

    checkpoint = _checkpointer(c, save)
    vae, steps = latent.train_autoencoder(c["budget"], c["batch"], c["learning_rate"], device=c["device"],
                                          log=c["log"], checkpoint=checkpoint, vae=start, world=world)
    vae = vae.float()
    if not c["decoder_only"]:  # a tuned decoder keeps the encoder, its latents and their scale
        latent.set_scaling_factor(vae, 64 if c["smoke"] else 1024, world=world)
    save(vae)
    evaluate = lambda: {"reconstruction_psnr": latent.reconstruction_psnr(  # noqa: E731
        AutoencoderKL.from_pretrained(c["folder"], torch_dtype=torch.float32).to(c["device"]), 8 if c["smoke"] else 256,
        world=world), "scaling_factor": vae.config.scaling_factor}
    data = (f"fresh {world[:-1]} renders of the train split; MSE + 1e-6 KL; scaling factor 1/std of 1024 train latents"
            + (f"; tuned from {start_from}" if start_from else ""))
    return {"data": data, "world": world, "ema": 0.998, "kl_weight": 1e-6}, steps, evaluate


def _faces_latent(c: dict):
    from diffusers import AutoencoderKL

    from regionedit.models import load_model
    from regionedit.toyworld import latent
    from regionedit.toyworld.evaluation import eval_faces_ddpm

    vae_source = c["weights"] / c["spec"]["needs"]
    vae = AutoencoderKL.from_pretrained(vae_source, torch_dtype=torch.float32).to(c["device"]).eval().requires_grad_(False)
    stream = latent.LatentWorldImages(latent.LatentEncoding(vae, None), c["batch"], world="faces")
    checkpoint = _checkpointer(c, lambda ema: _save_pipeline(c["folder"], ema, None, vae_source))
    recipe = _latent_recipe(c)
    unet, steps = latent.train_latent(_start_unet(c, latent.faces_latent_unet), stream, c["budget"], recipe,
                                      c["device"], c["log"], checkpoint)
    _save_pipeline(c["folder"], unet, None, vae_source)
    count, sampling_steps = (4, 5) if c["smoke"] else (256, 50)
    evaluate = lambda: eval_faces_ddpm(load_model(str(c["folder"]), device=c["device"]), count, sampling_steps)  # noqa: E731
    data = f"latents of train-split faces in a refreshing pool; autoencoder {c['spec']['needs']}, frozen"
    return {"data": data, "ema": 0.999, "recipe": recipe.__dict__}, steps, evaluate


def _latent_encoding(c: dict):
    from diffusers import AutoencoderKL

    from regionedit.toyworld.latent import LatentEncoding

    encode, tokenizer, text_source = _text_model(c["weights"], c["device"])
    vae_source = c["weights"] / "scenes-vae"
    vae = AutoencoderKL.from_pretrained(vae_source, torch_dtype=torch.float32).to(c["device"]).eval().requires_grad_(False)
    return LatentEncoding(vae, encode), tokenizer, text_source, vae_source


def _latent_recipe(c: dict):
    from regionedit.toyworld.latent import LatentRecipe

    speed = c["speed"]
    return LatentRecipe(learning_rate=c["learning_rate"], edit_weight=c["edit_weight"], min_snr_gamma=c["min_snr_gamma"],
                        pool=speed.pool if speed.pool or c["smoke"] else LatentRecipe.pool,
                        refresh_every=speed.refresh_every)


def _t2i(c: dict):
    from regionedit.models import load_model
    from regionedit.toyworld import latent
    from regionedit.toyworld.evaluation import eval_t2i

    encoding, tokenizer, text_source, vae_source = _latent_encoding(c)
    checkpoint = _checkpointer(c, lambda ema: _save_pipeline(c["folder"], ema, text_source, vae_source))
    stream = latent.LatentCaptionStream(tokenizer, encoding, c["batch"])
    recipe = _latent_recipe(c)
    unet, steps = latent.train_latent(_start_unet(c, lambda: latent.latent_unet(latent.LATENT_CHANNELS)), stream,
                                      c["budget"], recipe, c["device"], c["log"], checkpoint)
    _save_pipeline(c["folder"], unet, text_source, vae_source)
    count, sampling_steps = (4, 5) if c["smoke"] else (256, 20)
    evaluate = lambda: eval_t2i(load_model(str(c["folder"]), device=c["device"]), count, sampling_steps)  # noqa: E731
    data = ("latents of train-split scenes with captions (10 % dropped for guidance), cached in a refreshing pool; "
            "text encoder of scenes-clip and autoencoder scenes-vae, frozen")
    return {"data": data, "ema": 0.999, "recipe": recipe.__dict__}, steps, evaluate


def _instruct(c: dict):
    from diffusers import UNet2DConditionModel

    from regionedit.toyworld import latent
    from regionedit.toyworld.evaluation import eval_instruct

    spec = c["spec"]
    encoding, tokenizer, text_source, vae_source = _latent_encoding(c)
    if "remove_share" in spec and not c["resume"]:
        unet = UNet2DConditionModel.from_pretrained(c["weights"] / spec["needs"] / "unet", torch_dtype=torch.float32)
    else:
        unet = _start_unet(c, lambda: latent.latent_unet(2 * latent.LATENT_CHANNELS))
    checkpoint = _checkpointer(c, lambda ema: _save_pipeline(c["folder"], ema, text_source, vae_source))
    stream = latent.LatentInstructionStream(tokenizer, encoding, c["batch"], spec.get("remove_share"))
    recipe = _latent_recipe(c)
    unet, steps = latent.train_latent(unet, stream, c["budget"], recipe, c["device"], c["log"], checkpoint)
    _save_pipeline(c["folder"], unet, text_source, vae_source)
    evaluate = lambda: eval_instruct(str(c["folder"]), 2 if c["smoke"] else 400, device=str(c["device"]))  # noqa: E731
    data = ("latent instruction triplets of the train split in a refreshing pool, IP2P dropout (5 % text, 5 % image, "
            "5 % both); text encoder of scenes-clip and autoencoder scenes-vae, frozen")
    if "remove_share" in spec:
        data += f"; tuned from {spec['needs']} with {int(spec['remove_share'] * 100)} % removals"
    return {"data": data, "ema": 0.999, "recipe": recipe.__dict__}, steps, evaluate
