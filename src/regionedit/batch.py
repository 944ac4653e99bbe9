"""`regionedit batch`: edit the images of a JSONL manifest — resumable, on one process, several
processes or nodes under accelerate, or a Ray cluster.

Manifest: one JSON object per line with ``id`` (letters, digits, ``._-``), ``method`` (zone, rdm,
ddpm, rbe, jica), ``image`` (a path, relative to the manifest), optionally ``model`` and ``seed``,
the method's fields (zone: ``instruction``; rdm: ``target`` and one of ``locate``/``mask``/``box``;
ddpm: ``target_prompt`` and ``source_prompt``; rbe/jica: ``directions``, ``index``, ``strength``) and
``params`` passed to the method (names, types and ranges checked against :data:`PARAMS` when the
manifest is read). As in the CLI, images larger than the model's native resolution are downscaled
(``params.max_side`` to change it, where the method takes it). Malformed lines are reported with their numbers and skipped.

Output folder: ``outputs/<id>.png`` (plus ``<id>.mask.png`` / ``<id>.layer.png`` where the method
makes them), written atomically; ``done/<id>.json`` is written last and is the commit point of an
item; ``failed/<id>.json`` holds the reason of a failure (retried on the next run);
``logs/worker-<rank>.jsonl`` is each worker's history; ``summary.json`` the final count.

Several processes: ``accelerate launch --num_processes N -m regionedit.cli batch ...`` (on machines
without a GPU add ``--multi_gpu``: it is what makes accelerate start N processes; they then talk
over gloo on the CPU). Groups are dealt round-robin to the processes.

Work is cut into fixed groups from the manifest order (ZONE items of one model and identical
parameters are sampled ``--batch-size`` at a time), so a resumed or a distributed run computes every
item exactly as an uninterrupted single-process run does. A group that fails is retried item by
item, so each item succeeds or fails on its own, with its own reason.

Fault injection for the resume tests: ``REGIONEDIT_FAULT_AFTER_COMMITS=N`` kills the process (as
SIGKILL would: no clean-up) right after its N-th commit; ``REGIONEDIT_FAULT_IN_WRITE=N`` kills it in
the middle of writing the output files of its N-th item (after the first file, before the commit).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
import traceback
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from regionedit import defaults
from regionedit.errors import RegionEditError
from regionedit.images import atomic_write, load_image, mask_to_pil, pil_to_unit, save_png

METHOD_FIELDS = {"zone": ("instruction",), "rdm": ("target",), "ddpm": ("target_prompt",), "rbe": ("directions",),
                 "jica": ("directions",)}
BATCHABLE = {"zone"}
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")  # not starting with '.': no hidden files, no '..'
# Optional per-method fields of a manifest line and what each must be.
TEXT_FIELDS = ("locate", "mask", "source_prompt")


@dataclass(frozen=True)
class Param:
    """One accepted ``params`` entry: its type (int, float, bool, str, list) and closed range."""

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, name: str, value) -> None:
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise ValueError(f"params.{name} must be {self.kind.__name__}, got {json.dumps(value)[:40]}")
        if self.kind is float and not math.isfinite(value):
            raise ValueError(f"params.{name} must be a finite number, got {value}")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ValueError(f"params.{name} must be in [{self.low}, {self.high}], got {value}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"params.{name} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.kind is list and not all(isinstance(v, str) for v in value):
            raise ValueError(f"params.{name} must be a list of strings")


STEPS, GUIDANCE, UNIT = Param(int, 1, 1000), Param(float, 0, 100), Param(float, 0, 1)
# DDPM's manifest params are named as the CLI's flags; the editor's names:
DDPM_NAMES = {"steps": "num_inference_steps", "source_cfg": "source_guidance_scale", "target_cfg": "guidance_scale"}
MAX_SIDE = Param(int, 8, 8192)
# What each method's ``params`` may hold (the keyword arguments of its editor call; DDPM's by the CLI's names).
PARAMS: dict[str, dict[str, Param]] = {
    "zone": {"num_inference_steps": STEPS, "guidance_scale": GUIDANCE, "image_guidance_scale": GUIDANCE,
             "beta": UNIT, "threshold": Param(float, 0, 255), "attention_layers": Param(list),
             "union_above": UNIT, "attention_fraction": Param(float, 1e-3, 1), "dilation": Param(int, 0, 256), "d0": Param(float, 0, 1e4),
             "smoother_threshold": UNIT, "keep_segment": Param(bool),
             "keep_segment_limit": Param(float, 1, 1e6), "eta": UNIT, "max_side": MAX_SIDE,
             "segmenter": Param(str), "model2": Param(str)},
    "rdm": {"num_inference_steps": STEPS, "guidance_scale": GUIDANCE, "threshold": Param(float, 0, 255),
            "dilation": Param(int, 0, 256), "clip_guidance_scale": Param(float, 0, 1e5), "cutouts": Param(int, 1, 256),
            "nerp_mse": Param(float, 0, 1e7), "nerp_lpips": Param(float, 0, 1e7), "paste_back": Param(bool),
            "feather": Param(int, 0, 256), "eta": UNIT, "max_side": MAX_SIDE, "clip": Param(str)},
    "ddpm": {"steps": STEPS, "source_cfg": GUIDANCE, "target_cfg": GUIDANCE, "skip": Param(int, 0, 999)},
    "rbe": {"eta": UNIT, "asymmetric": Param(bool)},
    "jica": {"eta": UNIT, "asymmetric": Param(bool)},
}


def check_params(method: str, params: dict) -> None:
    """Raise ValueError naming the first unknown, mistyped or out-of-range entry of ``params``."""
    accepted = PARAMS[method]
    for name, value in params.items():
        if name not in accepted:
            raise ValueError(f"unknown params.{name} for method {method} (accepted: {', '.join(accepted)})")
        accepted[name].check(name, value)
    steps = params.get("steps", defaults.DDPM_STEPS)
    if method == "ddpm" and params.get("skip", 0) >= steps:
        raise ValueError(f"params.skip ({params.get('skip', 0)}) must be below params.steps ({steps})")


@dataclass
class Job:
    line: int
    id: str
    method: str
    image: Path
    model: str | None
    fields: dict
    params: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def group_key(self) -> tuple:
        """Items are batched only with items of the same method, model and parameters."""
        return (self.method, self.model, json.dumps(self.params, sort_keys=True))


def read_manifest(path: str | Path) -> tuple[list[Job], list[str]]:
    """Valid jobs, and one message per malformed line (with its number)."""
    path = Path(path)
    if not path.is_file():
        raise RegionEditError(f"manifest not found: {path}")
    jobs, problems, seen = [], [], set()
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            job = _parse(number, text, path.parent)
        except UnicodeDecodeError:
            problems.append(f"line {number}: not UTF-8 text")
            continue
        except ValueError as exc:
            problems.append(f"line {number}: {str(exc)[:300]}")
            continue
        if job.id in seen:
            problems.append(f"line {number}: duplicate id {job.id!r}")
            continue
        seen.add(job.id)
        jobs.append(job)
    return jobs, problems


def _parse(number: int, text: str, base: Path) -> Job:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    for key in ("id", "method", "image"):
        if key not in record:
            raise ValueError(f"missing {key!r}")
    if not isinstance(record["id"], str) or not ID_PATTERN.match(record["id"]):
        raise ValueError(f"id {str(record['id'])[:40]!r} must be 1–128 letters, digits, '.', '_' or '-', "
                         "not starting with '.'")
    method = record["method"]
    if method not in METHOD_FIELDS:
        raise ValueError(f"unknown method {method!r} (methods: {', '.join(METHOD_FIELDS)})")
    missing = [f for f in METHOD_FIELDS[method] if f not in record]
    if method == "rdm" and not any(k in record for k in ("locate", "mask", "box")):
        missing.append("locate, mask or box")
    if missing:
        raise ValueError(f"method {method} needs {', '.join(missing)}")
    if not isinstance(record["image"], str) or not record["image"].strip():
        raise ValueError("'image' must be a non-empty string (a path)")
    image = Path(record["image"])
    image = image if image.is_absolute() else base / image
    if not image.is_file():
        raise ValueError(f"image not found: {image}")
    params = record.get("params", {})
    if not isinstance(params, dict):
        raise ValueError("'params' must be an object")
    check_params(method, params)
    seed = record.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2^63), got {json.dumps(seed)[:40]}")
    model = record.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ValueError("'model' must be a non-empty string")
    fields = {k: v for k, v in record.items() if k not in ("id", "method", "image", "model", "params", "seed")}
    for name in METHOD_FIELDS[method]:
        if not isinstance(fields[name], str) or not fields[name].strip():
            raise ValueError(f"{name!r} must be a non-empty string")
    _check_fields(fields)
    return Job(number, record["id"], method, image, model, fields, params, seed)


def _check_fields(fields: dict) -> None:
    """The optional fields: texts are strings, ``box`` four finite numbers, ``index`` an integer,
    ``strength`` a finite number."""
    for name in TEXT_FIELDS:
        if name in fields and not isinstance(fields[name], str):
            raise ValueError(f"{name!r} must be a string")
    if "box" in fields:
        box = fields["box"]
        if not isinstance(box, list) or len(box) != 4 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box):
            raise ValueError(f"'box' must be a list of four finite numbers [x0, y0, x1, y1], got {json.dumps(box)[:40]}")
    if "index" in fields and (not isinstance(fields["index"], int) or isinstance(fields["index"], bool)):
        raise ValueError(f"'index' must be an integer, got {json.dumps(fields['index'])[:40]}")
    strength = fields.get("strength", 0.0)
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
        raise ValueError(f"'strength' must be a finite number, got {json.dumps(strength)[:40]}")


def make_groups(jobs: list[Job], batch_size: int) -> list[list[Job]]:
    """Fixed units of work in manifest order: batchable items of one model together, others alone."""
    by_key: dict[tuple, list[Job]] = defaultdict(list)
    groups = []
    for job in jobs:
        if job.method in BATCHABLE:
            by_key[job.group_key].append(job)
        else:
            groups.append([job])
    for members in by_key.values():
        groups += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return sorted(groups, key=lambda g: g[0].line)


# --------------------------------------------------------------------------------- store
class Store:
    """The output folder: files, commit markers and logs."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            for sub in ("outputs", "done", "failed", "logs"):
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegionEditError(f"cannot use {self.folder} as the output folder: {exc.strerror or exc}") from None

    def is_done(self, job_id: str) -> bool:
        return (self.folder / "done" / f"{job_id}.json").exists()

    def output(self, job_id: str, suffix: str = "") -> Path:
        return self.folder / "outputs" / f"{job_id}{suffix}.png"

    def commit(self, job: Job, record: dict, rank: int) -> None:
        record = {"id": job.id, "line": job.line, "method": job.method, "worker": rank, **record}
        failed = self.folder / "failed" / f"{job.id}.json"
        if failed.exists():
            failed.unlink()
        atomic_write(self.folder / "done" / f"{job.id}.json", lambda tmp: tmp.write_text(json.dumps(record, default=str)))
        self.log(rank, {"id": job.id, "status": "done", "seconds": record.get("seconds")})

    def fail(self, job: Job, reason: str, rank: int) -> None:
        record = {"id": job.id, "line": job.line, "method": job.method, "worker": rank, "reason": reason}
        atomic_write(self.folder / "failed" / f"{job.id}.json", lambda tmp: tmp.write_text(json.dumps(record)))
        self.log(rank, {"id": job.id, "status": "failed", "reason": reason})

    def log(self, rank: int, entry: dict) -> None:
        with open(self.folder / "logs" / f"worker-{rank}.jsonl", "a") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **entry}) + "\n")
            handle.flush()

    def summary(self, jobs: list[Job], problems: list[str]) -> dict:
        done = [j.id for j in jobs if self.is_done(j.id)]
        failed = {}
        for job in jobs:
            marker = self.folder / "failed" / f"{job.id}.json"
            if not self.is_done(job.id) and marker.exists():
                failed[job.id] = json.loads(marker.read_text())["reason"]
        pending = [j.id for j in jobs if j.id not in done and j.id not in failed]
        return {"items": len(jobs), "done": len(done), "failed": failed, "pending": pending,
                "malformed_lines": problems}


# -------------------------------------------------------------------------------- worker
class Worker:
    """Runs groups of jobs, loading each model once."""

    def __init__(self, store: Store, device: str | None = None, default_model: str | None = None, rank: int = 0):
        self.store, self.device, self.default_model, self.rank = store, device, default_model, rank
        self.run_id = uuid.uuid4().hex  # recorded in each commit: a finished item is never computed again
        self._cache: dict[tuple, object] = {}
        self.commits = self.writes = 0

    def cached(self, key: tuple, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def editor(self, cls, name: str | None, **companions):
        """The editor of the manifest line's model, else of --model, else of the method's embedded
        default; loaded once per model and companions."""
        name = name or self.default_model

        def build():
            editor = cls.from_pretrained(name, device=self.device, **companions)
            editor.set_progress_bar_config(disable=True)
            return editor

        return self.cached((cls.__name__, name, *sorted(companions.items())), build)

    def run_group(self, group: list[Job]) -> None:
        """Run a group in one call; if that fails and the group has several items, run each item
        alone, so that every item succeeds or fails on its own with its own reason."""
        pending = [job for job in group if not self.store.is_done(job.id)]
        if not pending:
            return
        started = time.perf_counter()
        try:
            results = getattr(self, f"_run_{group[0].method}")(group)
        except Exception as exc:  # noqa: BLE001 - one bad item must not stop the batch
            if len(group) > 1:
                for job in group:
                    self.run_group([job])
                return
            self.store.fail(group[0], _reason(exc), self.rank)
            return
        seconds = (time.perf_counter() - started) / len(group)
        for job, outputs in zip(group, results, strict=True):
            if job in pending:
                for number, (suffix, (image, recipe)) in enumerate(outputs.items()):
                    if number == 1:
                        _fault_point("REGIONEDIT_FAULT_IN_WRITE", self)
                    save_png(image, self.store.output(job.id, suffix), recipe)
                files = [self.store.output(job.id, s).name for s in outputs]
                self.store.commit(job, {"seconds": round(seconds, 4), "files": files, "run": self.run_id}, self.rank)
                self.commits += 1
                _fault_point("REGIONEDIT_FAULT_AFTER_COMMITS", self)

    # One function per method: a group of jobs → per job {suffix: (PIL image, recipe)}.
    def _image(self, job: Job):
        return load_image(job.image).image

    def _run_zone(self, group: list[Job]) -> list[dict]:
        from regionedit.editors import ZoneEditor

        params = dict(group[0].params)
        editor = self.editor(ZoneEditor, group[0].model, second_model=params.pop("model2", "auto"),
                             segmenter=params.pop("segmenter", "classical"))
        outputs = editor.edit_many([self._image(j) for j in group], [j.fields["instruction"] for j in group],
                                   generators=[j.seed for j in group], **params)
        results = []
        for job, out in zip(group, outputs, strict=True):
            recipe = self._recipe(job, out.recipe)
            results.append({"": (out.image, recipe), ".mask": (mask_to_pil(out.masks["final"]), recipe),
                            ".layer": (out.images["layer"], recipe)})
        return results

    def _run_rdm(self, group: list[Job]) -> list[dict]:
        from regionedit.editors import RDMEditor
        from regionedit.masks import box_mask, load_mask

        (job,) = group
        params = dict(job.params)
        editor = self.editor(RDMEditor, job.model, clip=params.pop("clip", "auto"))
        image = self._image(job)
        mask = None
        if "mask" in job.fields:
            mask_path = Path(job.fields["mask"])
            mask = load_mask(str(mask_path if mask_path.is_absolute() else job.image.parent / mask_path), image.size).mask
        elif "box" in job.fields:
            mask = box_mask(tuple(job.fields["box"]), image.size)
        out = editor(image, job.fields["target"], locate=job.fields.get("locate"), mask=mask, generator=job.seed, **params)
        recipe = self._recipe(job, out.recipe)
        return [{"": (out.image, recipe), ".mask": (mask_to_pil(out.masks["edit"]), recipe)}]

    def _run_ddpm(self, group: list[Job]) -> list[dict]:
        from regionedit.editors import DDPMEditor

        (job,) = group
        options = {DDPM_NAMES.get(name, name): value for name, value in job.params.items()}
        out = self.editor(DDPMEditor, job.model)(self._image(job), source_prompt=job.fields.get("source_prompt"),
                                                 prompt=job.fields["target_prompt"], generator=job.seed, **options)
        return [{"": (out.image, self._recipe(job, out.recipe))}]

    def _run_rbe(self, group: list[Job]) -> list[dict]:
        from regionedit.editors import JICAEditor, RBEEditor
        from regionedit.methods.directions import Directions

        (job,) = group
        path = Path(job.fields["directions"])
        directions = self.cached(("directions", str(path)), lambda: Directions.load(path if path.is_absolute() else job.image.parent / path))
        editor = self.editor(RBEEditor if job.method == "rbe" else JICAEditor, job.model or self.default_model or directions.model)
        out = editor.apply(self._image(job), directions, int(job.fields.get("index", 0)),
                           float(job.fields.get("strength", defaults.RBE_STRENGTH)), generator=job.seed, **job.params)
        return [{"": (out.image, self._recipe(job, out.recipe))}]

    _run_jica = _run_rbe

    @staticmethod
    def _recipe(job: Job, recipe: dict) -> dict:
        return {**recipe, "input": job.image.name, "id": job.id}


def _reason(exc: Exception) -> str:
    if not isinstance(exc, RegionEditError) and os.environ.get("REGIONEDIT_DEBUG"):
        traceback.print_exc()
    return str(exc).splitlines()[0] if isinstance(exc, RegionEditError) else f"{type(exc).__name__}: {exc}"


def _fault_point(variable: str, worker: Worker) -> None:
    """Die without clean-up at the N-th visit of this point when ``variable`` = N (tests only)."""
    limit = os.environ.get(variable)
    if not limit:
        return
    count = worker.commits if variable == "REGIONEDIT_FAULT_AFTER_COMMITS" else worker.writes + 1
    if variable == "REGIONEDIT_FAULT_IN_WRITE":
        worker.writes += 1
    if count >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


# -------------------------------------------------------------------------------- engines
def _state():
    """accelerate's process state. Without a GPU it must be told to use the CPU (gloo backend),
    otherwise processes started by ``accelerate launch --multi_gpu`` each believe they are alone."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _rank_and_size() -> tuple[int, int]:
    state = _state()
    return state.process_index, state.num_processes


def run_local(manifest: str | Path, out: str | Path, device: str | None = None, batch_size: int = 8,
              default_model: str | None = None, progress: bool = True, log=print) -> dict:
    """One process, or one of ``accelerate launch --num_processes N`` (each takes every N-th group)."""
    from tqdm.auto import tqdm

    _check_batch_size(batch_size)
    jobs, problems = read_manifest(manifest)
    state = _state()
    rank, world = state.process_index, state.num_processes
    if world > 1 and device is None:
        device = str(state.device)  # one GPU per process where there are GPUs
    store = Store(out)
    if rank == 0:
        for problem in problems:
            log(f"regionedit: note: {manifest}: {problem} (skipped)")
    groups = [g for g in make_groups(jobs, batch_size) if any(not store.is_done(j.id) for j in g)]
    mine = groups[rank::world]
    worker = Worker(store, device, default_model, rank)
    for group in tqdm(mine, disable=not progress or rank != 0, desc="batch", unit="group"):
        worker.run_group(group)
    if world > 1:
        state.wait_for_everyone()
    summary = store.summary(jobs, problems)
    if rank == 0:
        atomic_write(Path(out) / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return summary


class _RayWorker:
    """A Ray actor: models are loaded once per actor and reused for every group it runs."""

    def __init__(self, out: str, device: str | None, default_model: str | None):
        self.worker = Worker(Store(out), device, default_model, rank=os.getpid())

    def __call__(self, batch: dict) -> dict:
        for payload in batch["jobs"]:
            self.worker.run_group([Job(**{**j, "image": Path(j["image"])}) for j in json.loads(payload)])
        return {"group": batch["group"]}


def run_ray(manifest: str | Path, out: str | Path, device: str | None = None, batch_size: int = 8,
            default_model: str | None = None, workers: int = 2, log=print) -> dict:
    """The same groups as :func:`run_local`, as a Ray Data job over ``workers`` actors."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RegionEditError("the Ray engine needs Ray: pip install 'regionedit[ray]'") from None
    _check_batch_size(batch_size)
    jobs, problems = read_manifest(manifest)
    for problem in problems:
        log(f"regionedit: note: {manifest}: {problem} (skipped)")
    store = Store(out)
    groups = [g for g in make_groups(jobs, batch_size) if any(not store.is_done(j.id) for j in g)]
    if groups:
        started_here = not ray.is_initialized()
        if started_here:
            env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "REGIONEDIT_", "TRANSFORMERS_"))}
            ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        try:
            items = [{"group": i, "jobs": json.dumps([{**j.__dict__, "image": str(j.image)} for j in g])}
                     for i, g in enumerate(groups)]
            dataset = ray.data.from_items(items).map_batches(
                _RayWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
                fn_constructor_args=(str(Path(out).resolve()), device, default_model))
            dataset.take_all()
        finally:
            if started_here:
                ray.shutdown()
    summary = store.summary(jobs, problems)
    atomic_write(Path(out) / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return summary


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RegionEditError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")


def output_tensor(path: Path) -> torch.Tensor:
    """An output PNG as a tensor in [0, 1] (tests and benchmarks compare outputs with it)."""
    with Image.open(path) as image:
        return pil_to_unit(image.convert("RGB"))
