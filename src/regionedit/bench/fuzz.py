"""`regionedit bench fuzz`: a campaign of bad and odd inputs through every real entry point.

Each case gets its own folder with ``in/`` (its input files) and ``out/`` (where it may write), and
runs one call through one entry point:

- ``cli``: ``regionedit.cli.main([...])`` in-process (argparse's ``SystemExit`` is caught);
- ``batch``: the ``batch`` verb or :func:`regionedit.batch.run_local` on a manifest;
- ``app``: the web editor's handlers (``load_upload``, ``run_zone``, ``run_rdm``, ``run_ddpm``,
  ``discover_directions``, ``apply_direction``) called directly with a :class:`Workspace`;
- ``api``: the Python API (``load_image``, ``load_mask``, ``box_mask``, ``invert``, the methods).

Categories: images (damaged, odd sizes and modes, bombs, animations, EXIF, 16-bit, float, CMYK),
masks, boxes, texts (prompts and instructions), numbers (NaN, ±inf, negative, zero, huge for every
numeric option of the invert, edit and discover verbs, and the same at the library edge), direction
and inversion files, manifests and sessions. The tiny random models run with 2–4 steps.

Counted per case, per category and in total:
- ``tracebacks``: an exception other than :class:`RegionEditError` escaping a library or handler call
  or ``main`` (a batch item that failed with one counts too: its reason names the exception type);
- ``bad_exit_codes``: a CLI exit code other than 0 and 2;
- ``not_one_line``: an error that is not one line (``regionedit: error: …`` on stderr);
- ``accepted_bad_values``: a value the case marks as invalid (NaN, out of range) that was accepted;
- ``files_outside``: files created or changed outside the case's ``out/`` folder;
- ``inputs_modified``: input files whose bytes changed (every input is hashed before and after);
- ``changed_on_error``: files already in ``out/`` (a session) changed by a call that was refused;
- ``incomplete_outputs``: temporary files left behind, or outputs that do not decode (PNG, JSON,
  safetensors).
A case fails when any of these is non-zero; every failing case is listed with its reasons.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import struct
import tempfile
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from regionedit.errors import RegionEditError

COUNTERS = ("tracebacks", "bad_exit_codes", "not_one_line", "accepted_bad_values", "files_outside",
            "inputs_modified", "changed_on_error", "incomplete_outputs")
QUICK = ["-q"]
ZONE = ["--model", "tiny/ip2p", "--single", "--steps", "2"]
SD_INVERT = ["--model", "tiny/sd", "--steps", "3"]
RDM = ["--model", "tiny/sd", "--steps", "2", "--clip", "none", "--nerp-lpips", "0"]
PIXEL_DISCOVER = ["--model", "tiny/pixel-ddpm", "--steps", "4", "--timestep", "500", "--max-iterations", "2", "--k", "1",
                  "--r", "1"]
INTERNAL_REASON = re.compile(r"^[A-Z]\w*(Error|Exception|Interrupt)\b")


# ------------------------------------------------------------------------------- cases
@dataclass
class Dirs:
    """A case's folders: it reads from ``inp`` and may write only to ``out``."""

    inp: Path
    out: Path
    fixtures: Path

    def copy(self, name: str, as_name: str | None = None) -> Path:
        """Copy a shared fixture into the case's input folder."""
        target = self.inp / (as_name or name)
        source = self.fixtures / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        return target


@dataclass
class Case:
    category: str
    name: str
    entry: str  # cli | batch | app | api
    run: Callable[[Dirs, dict], object]  # (dirs, shared state) → CLI argv (a list) or a library call's result
    refuse: bool = False  # the input is invalid: the call must refuse it (exit 2 / RegionEditError)
    setup: Callable[[Dirs], None] | None = None


@dataclass
class Outcome:
    category: str
    name: str
    entry: str
    result: str  # ok | refused | crashed
    seconds: float
    problems: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------- image files
def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=params.pop("format", "PNG"), **params)
    return buffer.getvalue()


def photo(size: tuple[int, int] = (32, 32), seed: int = 0) -> Image.Image:
    """A seeded smooth RGB picture (gradients and a disc), so the models see structure."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs / max(width, 1), ys / max(height, 1), 0.5 + 0 * xs], axis=-1)
    disc = ((xs - width / 2) ** 2 + (ys - height / 2) ** 2) < (min(size) / 4) ** 2
    base[disc] = rng.random(3)
    return Image.fromarray((base * 255).astype(np.uint8))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit colour): filter byte 0 per row."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows))
            + _chunk(b"IEND", b""))


def bomb_png(side: int = 20000) -> bytes:
    """A valid PNG header claiming side×side pixels, with almost no data: a few bytes on disk."""
    return raw_png(side, side, 8, 2, b"\0" * 64)


def rgb16_png(width: int = 16, height: int = 16) -> bytes:
    row = b"\0" + b"".join(struct.pack(">HHH", 257 * x, 65535 - 257 * x, 30000) for x in range(width))
    return raw_png(width, height, 16, 2, row * height)


def animated(fmt: str) -> bytes:
    frames = [photo((24, 24), seed) for seed in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    image = photo((32, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    return png_bytes(image, format="JPEG", exif=exif.tobytes())


def palette_with_transparency() -> bytes:
    image = photo((24, 24)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return png_bytes(image, transparency=0)


def float_tiff() -> bytes:
    array = np.linspace(0, 1, 24 * 24, dtype=np.float32).reshape(24, 24)
    return png_bytes(Image.fromarray(array, mode="F"), format="TIFF")


def image_variants() -> dict[str, tuple[str, bytes | None]]:
    """name → (file name, bytes); None bytes = a folder of that name; missing files are made by cases."""
    good = png_bytes(photo())
    jpeg = png_bytes(photo(), format="JPEG")
    return {
        "zero-bytes": ("image.png", b""),
        "truncated-png": ("image.png", good[: len(good) // 2]),
        "truncated-jpeg": ("image.jpg", jpeg[: len(jpeg) // 2]),
        "jpeg-named-png": ("image.png", jpeg),
        "png-named-jpg": ("image.jpg", good),
        "text-named-png": ("image.png", b"this is not an image\n"),
        "html-named-png": ("image.png", b"<html><body><img src=x onerror=alert(1)></body></html>"),
        "1x1": ("image.png", png_bytes(photo((1, 1)))),
        "1x10000": ("image.png", png_bytes(Image.new("RGB", (1, 10000), (40, 80, 120)))),
        "10000x1": ("image.png", png_bytes(Image.new("RGB", (10000, 1), (40, 80, 120)))),
        "2100x2100": ("image.png", png_bytes(Image.new("RGB", (2100, 2100), (200, 10, 10)))),
        "bomb-20000x20000": ("image.png", bomb_png()),
        "animated-gif": ("image.gif", animated("GIF")),
        "animated-apng": ("image.png", animated("PNG")),
        "exif-rotated-jpeg": ("image.jpg", exif_rotated_jpeg()),
        "palette-transparency": ("image.png", palette_with_transparency()),
        "rgb-16bit": ("image.png", rgb16_png()),
        "gray-16bit": ("image.png", png_bytes(Image.fromarray(np.full((16, 16), 60000, np.uint16)))),
        "float-tiff": ("image.tif", float_tiff()),
        "cmyk-jpeg": ("image.jpg", png_bytes(photo().convert("CMYK"), format="JPEG")),
        "la-transparent": ("image.png", png_bytes(Image.new("LA", (16, 16), (0, 0)))),
        "one-bit": ("image.png", png_bytes(photo().convert("1"))),
        "folder": ("image.png", None),
    }


def write_variant(path: Path, data: bytes | None) -> Path:
    if data is None:
        path.mkdir(parents=True)
    else:
        path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------- fixtures
def build_fixtures(folder: Path, log=None) -> dict:
    """Shared inputs made once with the real CLI: an image, an inversion, directions, a session."""
    from regionedit.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    photo().save(folder / "photo.png")
    photo((32, 32), seed=1).save(folder / "photo2.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    steps = [
        ["invert", str(folder / "photo.png"), "-o", str(folder / "inv-sd.safetensors"), "--prompt", "a photo", *SD_INVERT],
        ["invert", str(folder / "photo.png"), "-o", str(folder / "inv-pixel.safetensors"), "--model", "tiny/pixel-ddpm",
         "--steps", "3"],
        ["discover", "rbe", str(folder / "photo.png"), "--mask", "8,8,20,20", "-o", str(folder / "dirs.safetensors"),
         *PIXEL_DISCOVER],
        ["session", "new", str(folder / "session"), str(folder / "photo.png")],
        ["session", "apply", str(folder / "session"), "make the disc blue", *ZONE],
    ]
    with _quiet():
        for argv in steps:
            if main([*argv, "-q"]) != 0:
                raise RuntimeError(f"fixture step failed: {' '.join(argv)}")
    return {"fixtures": folder}


# ------------------------------------------------------------------------------- checks
def file_hashes(folder: Path) -> dict[str, str]:
    """relative path → sha256 (folders as 'dir'), for every file under ``folder``."""
    found = {}
    if not folder.exists():
        return found
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def incomplete(out: Path, written: Iterable[str]) -> list[str]:
    """Temporary files left in ``out``, and outputs that do not decode, among the ``written`` files."""
    bad = []
    for rel in written:
        path = out / rel
        if not path.is_file():
            continue
        if path.name.endswith(".tmp") or path.name.startswith("."):
            bad.append(f"{rel} (temporary file left)")
        elif not _decodes(path):
            bad.append(f"{rel} (does not decode)")
    return bad


def _decodes(path: Path) -> bool:
    try:
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                    handle.get_tensor(key)
    except Exception:  # noqa: BLE001 - any failure to decode is the finding
        return False
    return True


def one_line_error(stderr: str) -> bool:
    errors = [line for line in stderr.splitlines() if line.startswith("regionedit: error:")]
    return len(errors) == 1 and "Traceback" not in stderr


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield


def call_case(case: Case, dirs: Dirs, state: dict) -> tuple[str, dict[str, str]]:
    """Run one case's call; return (result, problems) from its exceptions and exit code."""
    from regionedit.cli import main

    problems: dict[str, str] = {}
    stderr = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        warnings.simplefilter("ignore")
        try:
            value = case.run(dirs, state)
            if isinstance(value, list):
                try:
                    value = main([str(v) for v in value])
                except SystemExit as exit_:
                    value = exit_.code if isinstance(exit_.code, int) else 2
                code = int(value)
                result = "ok" if code == 0 else "refused"
                if code not in (0, 2):
                    problems["bad_exit_codes"] = f"exit code {code}"
                if code == 2 and not one_line_error(stderr.getvalue()):
                    problems["not_one_line"] = f"stderr: {stderr.getvalue().strip()[:300]!r}"
            else:
                result = "ok"
                internal = [r for r in _batch_reasons(value) if INTERNAL_REASON.match(r)]
                if internal:
                    problems["tracebacks"] = f"batch item failed with an internal error: {internal[0][:300]}"
        except RegionEditError as exc:
            result = "refused"
            if "\n" in str(exc).strip() or not str(exc).strip():
                problems["not_one_line"] = f"RegionEditError message {str(exc)[:300]!r}"
        except Exception as exc:  # noqa: BLE001 - counting these is the point
            result = "crashed"
            where = traceback.extract_tb(exc.__traceback__)[-1]
            problems["tracebacks"] = (f"{type(exc).__name__}: {str(exc)[:200]} "
                                      f"(at {Path(where.filename).name}:{where.lineno})")
    if case.refuse and result == "ok":
        problems["accepted_bad_values"] = "an invalid input was accepted"
    return result, problems


def _batch_reasons(value) -> list[str]:
    if isinstance(value, dict) and isinstance(value.get("failed"), dict):
        return [str(r) for r in value["failed"].values()]
    return []


def run_case(case: Case, root: Path, number: int, state: dict) -> Outcome:
    """Run a case in its own folder and check everything around the call."""
    folder = root / "cases" / f"{number:04d}"
    dirs = Dirs(folder / "in", folder / "out", state["fixtures"])
    dirs.inp.mkdir(parents=True)
    dirs.out.mkdir(parents=True)
    if case.setup is not None:
        case.setup(dirs)
    watched = [folder, state["fixtures"], state["cwd"], state["tmp"]]
    inputs_before, out_before = file_hashes(dirs.inp), file_hashes(dirs.out)
    around_before = {str(p): _outside(p, dirs.out) for p in watched}
    started = time.perf_counter()
    result, problems = call_case(case, dirs, state)
    seconds = time.perf_counter() - started
    modified = changed(inputs_before, file_hashes(dirs.inp))
    if modified:
        problems["inputs_modified"] = ", ".join(modified[:5])
    outside = [f"{p}/{name}" for p in map(Path, around_before) for name in changed(around_before[str(p)], _outside(p, dirs.out))]
    outside = [name for name in outside if not name.startswith(str(dirs.inp))]  # counted above
    if outside:
        problems["files_outside"] = ", ".join(outside[:5])
    written = changed(out_before, file_hashes(dirs.out))
    if result != "ok" and written and out_before:
        problems["changed_on_error"] = ", ".join(written[:5])
    moved = set(out_before.values())  # files the call only moved (a session's undo) are not its outputs
    bad = incomplete(dirs.out, [rel for rel in written if file_hashes(dirs.out).get(rel) not in moved])
    if bad:
        problems["incomplete_outputs"] = ", ".join(bad[:5])
    return Outcome(case.category, case.name, case.entry, result, round(seconds, 3), problems)


def _outside(folder: Path, out: Path) -> dict[str, str]:
    """Hashes of the files under ``folder`` that are not under ``out``."""
    return {k: v for k, v in file_hashes(folder).items() if not str(folder / k).startswith(str(out))}


# ------------------------------------------------------------------------------- case builders
def _image_setup(variant: tuple[str, bytes | None], name: str = "image"):
    file_name, data = variant

    def setup(dirs: Dirs) -> None:
        write_variant(dirs.inp / file_name.replace("image", name), data)
    return setup


def _path(dirs: Dirs, pattern: str) -> Path:
    found = sorted(dirs.inp.glob(pattern))
    return found[0] if found else dirs.inp / pattern


def image_cases() -> list[Case]:
    """Every image variant through upload, the CLI verbs, sessions, batch and load_image."""
    from regionedit.app import load_upload
    from regionedit.images import load_image

    cases = []
    variants = {**image_variants(), "missing": ("image.png", b"")}
    for name, variant in variants.items():
        setup = None if name == "missing" else _image_setup(variant)
        bad = name in ("zero-bytes", "truncated-png", "truncated-jpeg", "text-named-png", "html-named-png",
                       "bomb-20000x20000", "folder", "missing")

        def image(dirs, _file=variant[0]):
            return dirs.inp / _file

        cases += [
            Case("images", f"{name}: load_image", "api", lambda d, s, f=image: load_image(f(d)), bad, setup),
            Case("images", f"{name}: load_upload", "app",
                 lambda d, s, f=image: load_upload(s["workspace"](d), str(f(d))), bad, setup),
            Case("images", f"{name}: invert", "cli", lambda d, s, f=image: [
                "invert", f(d), "-o", d.out / "inv.safetensors", "--prompt", "x", *SD_INVERT, *QUICK], bad, setup),
            Case("images", f"{name}: edit zone", "cli", lambda d, s, f=image: [
                "edit", "zone", f(d), "make it blue", "-o", d.out / "z.png", "--layer", d.out / "layer.png",
                "--mask-out", d.out / "mask.png", *ZONE, *QUICK], bad, setup),
            Case("images", f"{name}: edit rdm", "cli", lambda d, s, f=image: [
                "edit", "rdm", f(d), "--box", "0,0,8,8", "--target", "a cat", "-o", d.out / "r.png", *RDM, *QUICK],
                bad, setup),
            Case("images", f"{name}: discover rbe", "cli", lambda d, s, f=image: [
                "discover", "rbe", f(d), "--mask", "face:eyes", "-o", d.out / "d.safetensors", *PIXEL_DISCOVER, *QUICK],
                bad, setup),
            Case("images", f"{name}: session new", "cli",
                 lambda d, s, f=image: ["session", "new", d.out / "session", f(d), *QUICK], bad, setup),
            batch_case("images", f"{name}: batch zone item", lambda d, f=image: {
                "id": "a", "method": "zone", "image": str(f(d)), "instruction": "make it blue", "model": "tiny/ip2p",
                "params": {"num_inference_steps": 2, "model2": "none"}}, setup),
        ]
    return cases


def batch_case(category: str, name: str, record: Callable[[Dirs], dict], setup: Callable[[Dirs], None] | None) -> Case:
    """A one-line manifest (written with the inputs) through the ``batch`` verb."""
    def prepare(dirs: Dirs) -> None:
        if setup is not None:
            setup(dirs)
        (dirs.inp / "manifest.jsonl").write_text(json.dumps(record(dirs)) + "\n")

    return Case(category, name, "batch", lambda d, s: [
        "batch", d.inp / "manifest.jsonl", "--out", d.out / "run", "--device", "cpu", *QUICK], False, prepare)


def mask_variants() -> dict[str, tuple[str, bytes | None]]:
    full = np.full((32, 32), 255, np.uint8)
    ramp = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    square = np.zeros((32, 32), np.uint8)
    square[8:20, 8:20] = 255
    return {
        "empty": ("mask.png", png_bytes(Image.fromarray(np.zeros((32, 32), np.uint8)))),
        "full": ("mask.png", png_bytes(Image.fromarray(full))),
        "other-size": ("mask.png", png_bytes(Image.fromarray(np.kron(square, np.ones((3, 2), np.uint8))))),
        "tiny-1x1": ("mask.png", png_bytes(Image.fromarray(np.full((1, 1), 255, np.uint8)))),
        "non-binary-ramp": ("mask.png", png_bytes(Image.fromarray(ramp))),
        "rgba": ("mask.png", png_bytes(Image.fromarray(np.dstack([square] * 4)))),
        "rgba-transparent": ("mask.png", png_bytes(Image.new("RGBA", (32, 32), (255, 255, 255, 0)))),
        "palette": ("mask.png", png_bytes(Image.fromarray(square).convert("P"))),
        "gray-16bit": ("mask.png", png_bytes(Image.fromarray(square.astype(np.uint16) * 257))),
        "float-tiff": ("mask.tif", png_bytes(Image.fromarray(square.astype(np.float32) / 255, mode="F"), format="TIFF")),
        "one-bit": ("mask.png", png_bytes(Image.fromarray(square).convert("1"))),
        "zero-bytes": ("mask.png", b""),
        "truncated": ("mask.png", png_bytes(Image.fromarray(square))[:40]),
        "bomb": ("mask.png", bomb_png()),
        "folder": ("mask.png", None),
    }


def mask_cases() -> list[Case]:
    from regionedit.masks import load_mask

    cases = []
    for name, variant in mask_variants().items():
        unreadable = name in ("zero-bytes", "truncated", "bomb", "folder")
        bad = unreadable or name == "empty"
        no_complement = bad or name in ("full", "tiny-1x1")

        def setup(dirs, _v=variant):
            dirs.copy("photo.png")
            _image_setup(_v)(dirs)

        def mask(dirs, _file=variant[0]):
            return dirs.inp / _file

        cases += [
            Case("masks", f"{name}: load_mask", "api", lambda d, s, m=mask: load_mask(str(m(d)), (32, 32)), unreadable,
                 setup),
            Case("masks", f"{name}: edit rdm --mask", "cli", lambda d, s, m=mask: [
                "edit", "rdm", d.inp / "photo.png", "--mask", m(d), "--target", "a cat", "-o", d.out / "r.png",
                "--mask-out", d.out / "m.png", *RDM, *QUICK], bad, setup),
            Case("masks", f"{name}: discover rbe --mask", "cli", lambda d, s, m=mask: [
                "discover", "rbe", d.inp / "photo.png", "--mask", m(d), "-o", d.out / "d.safetensors", *PIXEL_DISCOVER,
                *QUICK], no_complement, setup),
            Case("masks", f"{name}: discover jica --mask", "cli", lambda d, s, m=mask: [
                "discover", "jica", d.inp / "photo.png", "--mask", m(d), "--mask", "0,0,8,8", "-o", d.out / "d.safetensors",
                "--model", "tiny/pixel-ddpm", "--steps", "4", "--max-iterations", "2", "--svd-rank", "2", "--joint-rank", "1",
                "--individual-rank", "1", *QUICK], bad, setup),
            Case("masks", f"{name}: app discover regions", "app", lambda d, s, m=mask: s["app"].discover_directions(
                s["workspace"](d), _value(d.inp / "photo.png"), "rbe", str(m(d)), "tiny/pixel-ddpm", 2),
                no_complement, setup),
            batch_case("masks", f"{name}: batch rdm mask", lambda d, m=mask: {
                "id": "a", "method": "rdm", "image": "photo.png", "mask": m(d).name, "target": "a cat",
                "model": "tiny/sd", "params": {"num_inference_steps": 2, "clip_guidance_scale": 0, "nerp_lpips": 0.0}}, setup),
        ]
    brush_layers = {
        "brush-empty": Image.new("RGBA", (32, 32), (0, 0, 0, 0)),
        "brush-full": Image.new("RGBA", (32, 32), (255, 0, 255, 255)),
        "brush-other-size": Image.new("RGBA", (7, 90), (255, 0, 255, 255)),
        "brush-mode-L": Image.new("L", (32, 32), 255),
        "brush-mode-I16": Image.fromarray(np.full((32, 32), 40000, np.uint16)),
    }
    for name, layer in brush_layers.items():
        setup = _copy_photo
        cases += [
            Case("masks", f"{name}: app rdm", "app", lambda d, s, lay=layer: s["app"].run_rdm(
                s["workspace"](d), _value(d.inp / "photo.png", [lay]), "", "a cat", "", "tiny/sd", 150, 2, 0),
                name == "brush-empty", setup),
            Case("masks", f"{name}: app discover", "app", lambda d, s, lay=layer: s["app"].discover_directions(
                s["workspace"](d), _value(d.inp / "photo.png", [lay]), "rbe", "", "tiny/pixel-ddpm", 2),
                name in ("brush-full", "brush-other-size"), setup),
        ]
    return cases


def _copy_photo(dirs: Dirs) -> None:
    dirs.copy("photo.png")


def _value(path: Path, layers: list | None = None) -> dict:
    """What the Gradio ImageMask gives the handlers: a PIL background and brush layers."""
    with Image.open(path) as image:
        background = image.copy()
    return {"background": background, "layers": layers or [], "composite": background}


BOXES = {
    "inverted": "20,20,4,4", "zero-area": "5,5,5,9", "outside": "100,100,200,200", "negative": "-30,-30,-10,-10",
    "partly-outside": "-10,-10,10,10", "whole-image": "0,0,32,32", "huge": "0,0,1e30,1e30", "fractional": "0.5,0.5,9.5,9.5",
    "non-numeric": "a,b,c,d", "three-values": "1,2,3", "five-values": "1,2,3,4,5", "nan": "nan,nan,nan,nan",
    "inf": "-inf,-inf,inf,inf", "empty-string": "", "spaces": " 1 , 2 , 20 , 20 ", "hex": "0x1,0x2,0x10,0x10",
}
GOOD_BOXES = ("partly-outside", "whole-image", "fractional", "spaces", "huge")
WELL_FORMED_BOXES = (*GOOD_BOXES, "outside", "negative")  # valid boxes, though they may select nothing


def box_cases() -> list[Case]:
    from regionedit.masks import load_mask

    cases = []
    for name, box in BOXES.items():
        bad = name not in GOOD_BOXES
        cases += [
            Case("boxes", f"{name}: load_mask", "api", lambda d, s, b=box: load_mask(b, (32, 32)),
                 name not in WELL_FORMED_BOXES),
            Case("boxes", f"{name}: edit rdm --box", "cli", lambda d, s, b=box: [
                "edit", "rdm", d.inp / "photo.png", f"--box={b}", "--target", "a cat", "-o", d.out / "r.png", *RDM,
                *QUICK], bad, _copy_photo),
            Case("boxes", f"{name}: discover rbe --mask", "cli", lambda d, s, b=box: [
                "discover", "rbe", d.inp / "photo.png", f"--mask={b}", "-o", d.out / "d.safetensors", *PIXEL_DISCOVER,
                *QUICK], bad or name in ("whole-image", "huge"), _copy_photo),
            Case("boxes", f"{name}: app rdm box", "app", lambda d, s, b=box: s["app"].run_rdm(
                s["workspace"](d), _value(d.inp / "photo.png"), "", "a cat", b, "tiny/sd", 150, 2, 0),
                bad, _copy_photo),
            batch_case("boxes", f"{name}: batch rdm box", lambda d, b=box: {
                "id": "a", "method": "rdm", "image": "photo.png", "box": _box_field(b), "target": "a cat",
                "model": "tiny/sd", "params": {"num_inference_steps": 2, "clip_guidance_scale": 0, "nerp_lpips": 0.0}}, _copy_photo),
        ]
    return cases


def _box_field(text: str):
    """The box as a manifest would give it: a list of numbers where it parses, else the raw string."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        return text


TEXTS = {
    "empty": "", "whitespace": " \t ", "10000-chars": "make the ball blue " * 527, "emoji": "make the 🏀 💙 🚀🚀",
    "arabic": "اجعل الكرة زرقاء", "cjk": "把球变成蓝色", "devanagari": "गेंद को नीला करो", "combining": "ma\u0301ke i\u0308t blue",
    "control-chars": "make\x00 it\x1b[31m blue\x07", "newlines": "make it\nblue\r\n", "zero-width": "\u200b\u200d\ufeff",
    "rtl-override": "\u202emake it blue", "only-punctuation": "!!!???...", "backslashes": "\\x00 %s %n {0} $(rm -rf /)",
}


def text_cases() -> list[Case]:
    from regionedit.app import run_ddpm, run_rdm, run_zone

    cases = []
    for name, text in TEXTS.items():
        empty = name in ("empty", "whitespace")
        argv_text = text.replace("\x00", "")  # argv cannot carry NUL; the library and app calls get it
        cases += [
            Case("texts", f"{name}: edit zone instruction", "cli", lambda d, s, t=argv_text: [
                "edit", "zone", d.inp / "photo.png", t, "-o", d.out / "z.png", *ZONE, *QUICK], empty, _copy_photo),
            Case("texts", f"{name}: edit rdm --target", "cli", lambda d, s, t=argv_text: [
                "edit", "rdm", d.inp / "photo.png", "--box", "0,0,9,9", f"--target={t}", "-o", d.out / "r.png", *RDM,
                *QUICK], empty, _copy_photo),
            Case("texts", f"{name}: edit rdm --locate", "cli", lambda d, s, t=argv_text: [
                "edit", "rdm", d.inp / "photo.png", f"--locate={t}", "--target", "a cat", "--threshold", "1",
                "-o", d.out / "r.png", *RDM, *QUICK], empty, _copy_photo),
            Case("texts", f"{name}: invert --prompt", "cli", lambda d, s, t=argv_text: [
                "invert", d.inp / "photo.png", f"--prompt={t}", "-o", d.out / "i.safetensors", *SD_INVERT, *QUICK],
                False, _copy_photo),
            Case("texts", f"{name}: edit ddpm --target-prompt", "cli", lambda d, s, t=argv_text: [
                "edit", "ddpm", "--inversion", d.inp / "inv-sd.safetensors", f"--target-prompt={t}", "--skip", "1",
                "--model", "tiny/sd", "-o", d.out / "e.png", *QUICK], False, lambda d: d.copy("inv-sd.safetensors")),
            Case("texts", f"{name}: app zone", "app", lambda d, s, t=text: run_zone(
                s["workspace"](d), _value(d.inp / "photo.png"), t, "tiny/ip2p", 2, True, []), empty, _copy_photo),
            Case("texts", f"{name}: app rdm", "app", lambda d, s, t=text: run_rdm(
                s["workspace"](d), _value(d.inp / "photo.png"), t, t, "0,0,9,9", "tiny/sd", 150, 2, 0), empty, _copy_photo),
            Case("texts", f"{name}: app ddpm", "app", lambda d, s, t=text: run_ddpm(
                s["workspace"](d), _value(d.inp / "photo.png"), t, t, 1, 7.5, 3, "tiny/sd"), False, _copy_photo),
            Case("texts", f"{name}: session apply", "cli", lambda d, s, t=argv_text: [
                "session", "apply", d.out / "session", t, *ZONE, *QUICK], empty, _session_setup()),
            batch_case("texts", f"{name}: batch zone", lambda d, t=text: {
                "id": "a", "method": "zone", "image": "photo.png", "instruction": t, "model": "tiny/ip2p",
                "params": {"num_inference_steps": 2, "model2": "none"}}, _copy_photo),
        ]
    return cases


# ------------------------------------------------------------------------------- numbers
@dataclass(frozen=True)
class Option:
    """A numeric CLI option and its valid range (closed unless ``open_low``)."""

    flag: str
    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def valid(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or value <= self.high


SEED = Option("--seed", int, 0, 2**63 - 1)
MAX_SIDE = Option("--max-side", int, 1)
VERBS: dict[str, tuple[Callable[[Dirs], list], list[Option]]] = {
    "invert": (lambda d: ["invert", d.inp / "photo.png", "-o", d.out / "i.safetensors", "--model", "tiny/sd",
                          "--prompt", "x"],
               [Option("--cfg", float, 0), Option("--eta", float, 0, 1, open_low=True), Option("--steps", int, 1, 1000),
                SEED, Option("--batch-size", int, 1), MAX_SIDE]),
    "edit ddpm": (lambda d: ["edit", "ddpm", d.inp / "photo.png", "-o", d.out / "e.png", "--model", "tiny/sd",
                             "--source-prompt", "x", "--target-prompt", "y", "--skip", "1"],
                  [Option("--source-cfg", float, 0), Option("--target-cfg", float, 0), Option("--skip", int, 0, 2),
                   Option("--steps", int, 1, 1000), Option("--eta", float, 0, 1, open_low=True), SEED,
                   Option("--batch-size", int, 1), MAX_SIDE]),
    "edit zone": (lambda d: ["edit", "zone", d.inp / "photo.png", "make it blue", "-o", d.out / "z.png",
                             "--model", "tiny/ip2p", "--single"],
                  [Option("--steps", int, 1, 1000), Option("--cfg", float, 0), Option("--image-cfg", float, 0),
                   Option("--threshold", float, 0, 255), Option("--union-iou", float, 0, 1), SEED, MAX_SIDE]),
    "edit rdm": (lambda d: ["edit", "rdm", d.inp / "photo.png", "--box", "0,0,9,9", "--target", "a cat",
                            "-o", d.out / "r.png", "--model", "tiny/sd"],
                 [Option("--steps", int, 1, 1000), Option("--cfg", float, 0), Option("--threshold", float, 0, 255),
                  Option("--dilate", int, 0, 4096), Option("--clip-scale", float, 0), Option("--cutouts", int, 1, 256),
                  Option("--nerp-mse", float, 0), Option("--nerp-lpips", float, 0), Option("--feather", int, 0, 4096),
                  Option("--eta", float, 0, 1), SEED, MAX_SIDE]),
    "edit rbe": (lambda d: ["edit", "rbe", d.inp / "photo.png", "--directions", d.inp / "dirs.safetensors",
                            "-o", d.out / "e.png", "--model", "tiny/pixel-ddpm"],
                 [Option("--index", int, -1, 0), Option("--strength", float), SEED, MAX_SIDE]),
    "discover rbe": (lambda d: ["discover", "rbe", d.inp / "photo.png", "--mask", "8,8,20,20", "-o", d.out / "d.safetensors",
                                "--model", "tiny/pixel-ddpm"],
                     [Option("--timestep", int, 0, 999), Option("--steps", int, 1, 1000),
                      Option("--max-iterations", int, 1, 10000), Option("--tolerance", float, 0), Option("--k", int, 1, 3),
                      Option("--r", int, 1, 3), SEED, MAX_SIDE]),
    "discover jica": (lambda d: ["discover", "jica", d.inp / "photo.png", "--mask", "8,8,20,20", "--mask", "0,0,8,8",
                                 "-o", d.out / "d.safetensors", "--model", "tiny/pixel-ddpm"],
                      [Option("--svd-rank", int, 1, 8), Option("--joint-rank", int, 1, 2),
                       Option("--individual-rank", int, 1, 2)]),
}
# Quick settings for the options a case does not fuzz (so every case runs in well under a second).
QUICK_SETTINGS = {
    "invert": {"--steps": "3"}, "edit ddpm": {"--steps": "3"}, "edit zone": {"--steps": "2"},
    "edit rdm": {"--steps": "2", "--clip-scale": "0", "--nerp-lpips": "0"}, "edit rbe": {},
    "discover rbe": {"--steps": "4", "--max-iterations": "2", "--k": "1", "--r": "1"},
    "discover jica": {"--steps": "4", "--max-iterations": "2", "--svd-rank": "2", "--joint-rank": "1",
                      "--individual-rank": "1"},
}
FLOAT_VALUES = ("nan", "inf", "-inf", "-1", "-1e30", "1e30", "0")
INT_VALUES = ("-1", "0", "1000000000000", "-1000000000000", "nan", "1.5")


def number_cases() -> list[Case]:
    """Every numeric option of the invert, edit and discover verbs × NaN, ±inf, negative, zero, huge."""
    cases = []
    for verb, (base, options) in VERBS.items():
        for option in options:
            values = FLOAT_VALUES if option.kind is float else INT_VALUES
            for text in values:
                try:
                    number = option.kind(text)
                except ValueError:
                    number = math.nan  # argparse refuses it
                refuse = not option.valid(float(number))
                settings = {k: v for k, v in QUICK_SETTINGS[verb].items() if k != option.flag}
                if option.flag == "--steps" and verb == "edit ddpm":
                    settings["--skip"] = "0"

                def argv(d, s, _b=base, _f=option.flag, _t=text, _s=settings):
                    return [*_b(d), *(x for kv in _s.items() for x in kv), f"{_f}={_t}", *QUICK]

                cases.append(Case("numbers", f"{verb} {option.flag}={text}", "cli", argv, refuse, _number_setup))
    return cases


def _number_setup(dirs: Dirs) -> None:
    dirs.copy("photo.png")
    dirs.copy("dirs.safetensors")


def api_number_cases() -> list[Case]:
    """The same bad numbers at the library edge: each call must refuse them with a RegionEditError."""
    nan, inf = math.nan, math.inf

    def model(state, name):
        from regionedit.models import load_model

        models = state.setdefault("models", {})
        if name not in models:
            models[name] = load_model(name)
        return models[name]

    def invert(d, s, **kw):
        from regionedit.core.inversion import invert as run

        return run(model(s, "tiny/sd"), photo(), prompt="x", **{"num_inference_steps": 2, "progress": False, **kw})

    def rdm(d, s, **kw):
        from regionedit.masks import box_mask
        from regionedit.methods import rdm as method

        return method.edit(model(s, "tiny/sd"), photo(), "a cat", mask=box_mask((0, 0, 9, 9), (32, 32)),
                           **{"num_inference_steps": 2, "clip_guidance_scale": 0, "nerp_lpips": 0, "progress": False, **kw})

    def zone(d, s, **kw):
        from regionedit.methods import zone as method

        return method.edit(model(s, "tiny/ip2p"), photo(), "make it blue", **{"num_inference_steps": 2, "progress": False,
                                                                                 **kw})

    def start(d, s, **kw):
        from regionedit.methods.hspace_edit import start_from_image

        return start_from_image(model(s, "tiny/pixel-ddpm"), photo(), **{"num_inference_steps": 4, **kw})

    def direction(d, s, **kw):
        from regionedit.methods.directions import Directions
        from regionedit.methods.hspace_edit import sample_with_direction, start_from_image

        pixel = model(s, "tiny/pixel-ddpm")
        found = Directions.load(s["fixtures"] / "dirs.safetensors")
        begin = start_from_image(pixel, photo(), timestep=found.timestep, num_inference_steps=found.num_inference_steps)
        return sample_with_direction(pixel, begin, found.vector(kw.pop("index", 0)), **{"strength": 1.0, **kw})

    def rbe(d, s, **kw):
        from regionedit.masks import box_mask
        from regionedit.methods import rbe as method
        from regionedit.methods.hspace_edit import start_from_image

        pixel = model(s, "tiny/pixel-ddpm")
        begin = start_from_image(pixel, photo(), num_inference_steps=4)
        return method.discover(pixel, begin, box_mask((8, 8, 20, 20), (32, 32)), **{"k": 1, "complement_rank": 1,
                                                                                   "max_iterations": 2, **kw})

    def box(d, s, **kw):
        from regionedit.masks import box_mask

        return box_mask(kw["box"], (32, 32))

    calls = {"invert": invert, "rdm.edit": rdm, "zone.edit": zone, "start_from_image": start,
             "sample_with_direction": direction, "rbe.discover": rbe, "box_mask": box}
    bad = {
        "invert": {"guidance_scale": [nan, inf, -1.0], "eta": [nan, -0.5, 2.0], "num_inference_steps": [0, -3, 10**9],
                   "seed": [-1, 2**70], "batch_size": [0], "max_side": [0, -5]},
        "rdm.edit": {"guidance_scale": [nan, -inf], "threshold": [nan, -1.0, 1e9], "dilation": [-1, 10**9],
                     "clip_guidance_scale": [nan], "cutouts": [0, -2, 10**9], "nerp_mse": [nan, inf],
                     "nerp_lpips": [nan], "feather": [-1, 10**9], "eta": [nan, 1.5], "seed": [2**70],
                     "num_inference_steps": [0, 10**6]},
        "zone.edit": {"guidance_scale": [nan], "image_guidance_scale": [nan, -1.0], "threshold": [nan, 300.0],
                      "beta": [nan, -1.0], "union_above": [nan, 2.0], "dilation": [-2, 10**9], "d0": [nan, -1.0],
                      "smoother_threshold": [nan], "keep_segment": ["yes"], "keep_segment_limit": [0.5, nan], "eta": [nan, -1.0], "seed": [-5],
                      "num_inference_steps": [0]},
        "start_from_image": {"timestep": [-10, 10**9], "num_inference_steps": [0, 10**6], "guidance_scale": [nan],
                             "seed": [2**70], "max_side": [0]},
        "sample_with_direction": {"strength": [nan, inf], "eta": [nan, 2.0], "seed": [-1], "index": [10**6]},
        "rbe.discover": {"max_iterations": [0, -1, 10**12], "tolerance": [nan, -1.0], "k": [0, 10**6],
                         "complement_rank": [0], "seed": [2**70]},
        "box_mask": {"box": [(nan, 0, 5, 5), (0, 0, inf, 5), (0, 0, 5)]},
    }
    cases = []
    for call, arguments in bad.items():
        for argument, values in arguments.items():
            for value in values:
                kwargs = {argument: value}
                cases.append(Case("numbers", f"{call}({argument}={value!r})", "api",
                                  lambda d, s, c=calls[call], k=kwargs: c(d, s, **dict(k)), True))
    app_bad = {
        "app zone steps": lambda d, s, v: s["app"].run_zone(s["workspace"](d), _value(d.inp / "photo.png"), "make it blue",
                                                             "tiny/ip2p", v, True, []),
        "app rdm steps": lambda d, s, v: s["app"].run_rdm(s["workspace"](d), _value(d.inp / "photo.png"), "", "a cat",
                                                           "0,0,9,9", "tiny/sd", 150, v, 0),
        "app rdm threshold": lambda d, s, v: s["app"].run_rdm(s["workspace"](d), _value(d.inp / "photo.png"), "the disc",
                                                               "a cat", "", "tiny/sd", v, 2, 0),
        "app rdm clip scale": lambda d, s, v: s["app"].run_rdm(s["workspace"](d), _value(d.inp / "photo.png"), "", "a cat",
                                                                "0,0,9,9", "tiny/sd", 150, 2, v),
        "app ddpm skip": lambda d, s, v: s["app"].run_ddpm(s["workspace"](d), _value(d.inp / "photo.png"), "x", "y", v,
                                                            7.5, 3, "tiny/sd"),
        "app ddpm cfg": lambda d, s, v: s["app"].run_ddpm(s["workspace"](d), _value(d.inp / "photo.png"), "x", "y", 1, v,
                                                           3, "tiny/sd"),
        "app ddpm steps": lambda d, s, v: s["app"].run_ddpm(s["workspace"](d), _value(d.inp / "photo.png"), "x", "y", 0,
                                                             7.5, v, "tiny/sd"),
        "app discover iterations": lambda d, s, v: s["app"].discover_directions(
            s["workspace"](d), _value(d.inp / "photo.png"), "rbe", "8,8,20,20", "tiny/pixel-ddpm", v),
    }
    for name, fn in app_bad.items():
        for value in (nan, inf, -1, -1e30, None):
            cases.append(Case("numbers", f"{name}={value}", "app", lambda d, s, f=fn, v=value: f(d, s, v), True, _copy_photo))
    return cases


# ------------------------------------------------------------------------------- files
def tamper(path: Path, edit: Callable[[dict, dict], None]) -> None:
    """Rewrite a regionedit safetensors file with its tensors and metadata changed by ``edit``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as handle:
        meta = dict(handle.metadata() or {})
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    edit(tensors, meta)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def _meta_json(key: str, change: Callable[[dict], None]) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, meta: dict) -> None:
        data = json.loads(meta[key])
        change(data)
        meta[key] = json.dumps(data)
    return edit


def direction_variants() -> dict[str, Callable[[Path], None]]:
    import torch

    return {
        "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
        "zero-bytes": lambda p: p.write_bytes(b""),
        "garbage": lambda p: p.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"),
        "other-model": lambda p: tamper(p, _meta_json("metadata", lambda m: m.update(model="tiny/sd"))),
        "metadata-not-json": lambda p: tamper(p, lambda t, m: m.update(metadata="{not json")),
        "metadata-missing-keys": lambda p: tamper(p, lambda t, m: m.update(metadata="{}")),
        "metadata-wrong-types": lambda p: tamper(p, _meta_json("metadata", lambda m: m.update(
            timestep="late", num_inference_steps=-4, labels=None, space="z"))),
        "metadata-list": lambda p: tamper(p, lambda t, m: m.update(metadata="[1, 2]")),
        "format-missing": lambda p: tamper(p, lambda t, m: m.pop("format")),
        "vectors-wrong-shape": lambda p: tamper(p, lambda t, m: t.update(vectors=torch.zeros(1, 3, 2, 2))),
        "vectors-1d": lambda p: tamper(p, lambda t, m: t.update(vectors=torch.zeros(5))),
        "vectors-nan": lambda p: tamper(p, lambda t, m: t.update(vectors=torch.full_like(t["vectors"], math.nan))),
        "vectors-missing": lambda p: tamper(p, lambda t, m: t.pop("vectors")),
        "labels-fewer": lambda p: tamper(p, _meta_json("metadata", lambda m: m.update(labels=[]))),
        "steps-zero": lambda p: tamper(p, _meta_json("metadata", lambda m: m.update(num_inference_steps=0))),
        "is-an-inversion": lambda p: shutil.copy2(p.parent / "inv-sd.safetensors", p),
    }


def inversion_variants() -> dict[str, Callable[[Path], None]]:
    import torch

    return {
        "truncated": lambda p: p.write_bytes(p.read_bytes()[:200]),
        "zero-bytes": lambda p: p.write_bytes(b""),
        "from-pixel-model": lambda p: shutil.copy2(p.parent / "inv-pixel.safetensors", p),
        "model-renamed": lambda p: tamper(p, lambda t, m: m.update(model="someone/else")),
        "fit-not-json": lambda p: tamper(p, lambda t, m: m.update(fit="{oops")),
        "fit-wrong": lambda p: tamper(p, lambda t, m: m.update(fit=json.dumps({"original_size": "x"}))),
        "guidance-not-a-number": lambda p: tamper(p, lambda t, m: m.update(guidance_scale="lots")),
        "eta-nan": lambda p: tamper(p, lambda t, m: m.update(eta="nan")),
        "prompt-not-json": lambda p: tamper(p, lambda t, m: m.update(prompt="not json")),
        "seed-huge": lambda p: tamper(p, lambda t, m: m.update(seed=str(2**80))),
        "metadata-missing": lambda p: tamper(p, lambda t, m: [m.pop(k) for k in list(m) if k != "format"]),
        "zs-wrong-shape": lambda p: tamper(p, lambda t, m: t.update(zs=t["zs"][:, :, :2])),
        "zs-fewer-steps": lambda p: tamper(p, lambda t, m: t.update(zs=t["zs"][:1])),
        "timesteps-missing": lambda p: tamper(p, lambda t, m: t.pop("timesteps")),
        "timesteps-float": lambda p: tamper(p, lambda t, m: t.update(timesteps=t["timesteps"].double() + 0.5)),
        "x0-nan": lambda p: tamper(p, lambda t, m: t.update(x0=torch.full_like(t["x0"], math.nan))),
        "is-directions": lambda p: shutil.copy2(p.parent / "dirs.safetensors", p),
    }


def file_cases() -> list[Case]:
    from regionedit.core.inversion import DDPMInversion
    from regionedit.methods.directions import Directions

    cases = []
    for name, change in direction_variants().items():
        def setup(dirs, _c=change):
            for fixture in ("photo.png", "dirs.safetensors", "inv-sd.safetensors"):
                dirs.copy(fixture)
            _c(dirs.inp / "dirs.safetensors")

        cases += [
            Case("files", f"directions {name}: Directions.load + vector", "api",
                 lambda d, s: Directions.load(d.inp / "dirs.safetensors").vector(0), False, setup),
            Case("files", f"directions {name}: edit rbe", "cli", lambda d, s: [
                "edit", "rbe", d.inp / "photo.png", "--directions", d.inp / "dirs.safetensors", "-o", d.out / "e.png",
                "--model", "tiny/pixel-ddpm", *QUICK], True, setup),
            Case("files", f"directions {name}: edit rbe --strip", "cli", lambda d, s: [
                "edit", "rbe", d.inp / "photo.png", "--directions", d.inp / "dirs.safetensors", "-o", d.out / "e.png",
                "--strip", "--strengths=-5,0,5", "--model", "tiny/pixel-ddpm", *QUICK], True, setup),
            batch_case("files", f"directions {name}: batch rbe", lambda d: {
                "id": "a", "method": "rbe", "image": "photo.png", "directions": "dirs.safetensors",
                "model": "tiny/pixel-ddpm", "index": 0, "strength": 3.0}, setup),
        ]
    for name, change in inversion_variants().items():
        def setup(dirs, _c=change):
            for fixture in ("inv-sd.safetensors", "inv-pixel.safetensors", "dirs.safetensors"):
                dirs.copy(fixture)
            _c(dirs.inp / "inv-sd.safetensors")

        refuse = name not in ("model-renamed", "seed-huge")
        cases += [
            Case("files", f"inversion {name}: DDPMInversion.load", "api",
                 lambda d, s: DDPMInversion.load(d.inp / "inv-sd.safetensors"), False, setup),
            Case("files", f"inversion {name}: edit ddpm --inversion", "cli", lambda d, s: [
                "edit", "ddpm", "--inversion", d.inp / "inv-sd.safetensors", "--target-prompt", "a cat", "--skip", "1",
                "--model", "tiny/sd", "-o", d.out / "e.png", *QUICK], refuse, setup),
            Case("files", f"inversion {name}: edit ddpm --shift --tint", "cli", lambda d, s: [
                "edit", "ddpm", "--inversion", d.inp / "inv-sd.safetensors", "--target-prompt", "a cat", "--skip", "0",
                "--shift", "1,-1", "--tint", "0.1,0,0,0", "--model", "tiny/sd", "-o", d.out / "e.png", *QUICK],
                refuse, setup),
        ]
    return cases


# ------------------------------------------------------------------------------- manifests
def _line(**record) -> str:
    base = {"id": "a", "method": "zone", "image": "photo.png", "instruction": "make it blue", "model": "tiny/ip2p",
            "params": {"num_inference_steps": 2, "model2": "none"}}
    return json.dumps({**base, **record})


MANIFESTS: dict[str, bytes] = {
    "duplicate-ids": (_line() + "\n" + _line() + "\n").encode(),
    "id-with-slash": _line(id="../escape").encode(),
    "id-dot-dot": _line(id="..").encode(),
    "id-dot": _line(id=".").encode(),
    "id-hidden": _line(id=".hidden").encode(),
    "id-absolute": _line(id="/tmp/x").encode(),
    "id-not-string": _line(id=7).encode(),
    "id-long": _line(id="a" * 129).encode(),
    "non-utf8": b'{"id": "a\xff\xfe", "method": "zone"}\n' + _line(id="b").encode() + b"\n",
    "latin1-line": _line(instruction="caf\u00e9").encode("latin-1") + b"\n" + _line(id="b").encode(),
    "bom": b"\xef\xbb\xbf" + _line().encode(),
    "huge-line": _line(instruction="make it blue " * 200_000).encode(),
    "huge-garbage-line": b"x" * 5_000_000,
    "not-json": b"{this is not json\n",
    "json-array": b"[1, 2, 3]\n",
    "nul-bytes": b"\0\0\0\n" + _line(id="b").encode(),
    "params-unknown": _line(params={"nope": 1}).encode(),
    "params-nan": b'{"id": "a", "method": "zone", "image": "photo.png", "instruction": "x", "params": {"eta": NaN}}',
    "params-huge-steps": _line(params={"num_inference_steps": 10**9}).encode(),
    "params-wrong-type": _line(params={"num_inference_steps": "two"}).encode(),
    "params-not-object": _line(params=[1, 2]).encode(),
    "seed-negative": _line(seed=-1).encode(),
    "seed-float": _line(seed=1.5).encode(),
    "image-missing": _line(image="nope.png").encode(),
    "image-not-string": _line(image=5).encode(),
    "image-absolute-outside": _line(image="/etc/passwd").encode(),
    "image-is-manifest": _line(image="manifest.jsonl").encode(),
    "method-unknown": _line(method="magic").encode(),
    "model-unknown": _line(model="nobody/nothing").encode(),
    "model-empty": _line(model="").encode(),
    "instruction-not-string": _line(instruction=["make", "it"]).encode(),
    "rdm-box-string": json.dumps({"id": "a", "method": "rdm", "image": "photo.png", "target": "x", "box": "1,2,3,4",
                                  "model": "tiny/sd", "params": {"num_inference_steps": 2, "clip_guidance_scale": 0}}).encode(),
    "rdm-box-nan": b'{"id": "a", "method": "rdm", "image": "photo.png", "target": "x", "box": [NaN, 0, 5, 5],'
                   b' "model": "tiny/sd", "params": {"num_inference_steps": 2, "clip_guidance_scale": 0}}',
    "rdm-mask-number": json.dumps({"id": "a", "method": "rdm", "image": "photo.png", "target": "x", "mask": 5,
                                   "model": "tiny/sd"}).encode(),
    "rdm-locate-list": json.dumps({"id": "a", "method": "rdm", "image": "photo.png", "target": "x", "locate": [1],
                                   "model": "tiny/sd", "params": {"num_inference_steps": 2, "clip_guidance_scale": 0}}).encode(),
    "ddpm-source-prompt-number": json.dumps({"id": "a", "method": "ddpm", "image": "photo.png", "target_prompt": "x",
                                             "source_prompt": 3, "model": "tiny/sd", "params": {"steps": 3, "skip": 1}}).encode(),
    "rbe-index-string": json.dumps({"id": "a", "method": "rbe", "image": "photo.png", "directions": "dirs.safetensors",
                                    "index": "first", "model": "tiny/pixel-ddpm"}).encode(),
    "rbe-strength-nan": b'{"id": "a", "method": "rbe", "image": "photo.png", "directions": "dirs.safetensors",'
                        b' "strength": NaN, "model": "tiny/pixel-ddpm"}',
    "rbe-directions-missing": json.dumps({"id": "a", "method": "rbe", "image": "photo.png", "directions": "nope.safetensors",
                                          "model": "tiny/pixel-ddpm"}).encode(),
    "empty-file": b"",
    "only-blank-lines": b"\n\n   \n",
}


def manifest_cases() -> list[Case]:
    from regionedit import batch

    cases = []
    for name, data in MANIFESTS.items():
        def setup(dirs, _d=data):
            dirs.copy("photo.png")
            dirs.copy("dirs.safetensors")
            (dirs.inp / "manifest.jsonl").write_bytes(_d)

        cases += [
            Case("manifests", f"{name}: batch verb", "batch", lambda d, s: [
                "batch", d.inp / "manifest.jsonl", "--out", d.out / "run", "--device", "cpu", *QUICK], False, setup),
            Case("manifests", f"{name}: run_local", "batch", lambda d, s: batch.run_local(
                d.inp / "manifest.jsonl", d.out / "run", device="cpu", progress=False, log=lambda m: None), False, setup),
        ]
    odd_runs = {
        "manifest-is-folder": lambda d: ["batch", d.inp, "--out", d.out / "run", *QUICK],
        "manifest-missing": lambda d: ["batch", d.inp / "nope.jsonl", "--out", d.out / "run", *QUICK],
        "out-is-a-file": lambda d: ["batch", d.inp / "manifest.jsonl", "--out", d.inp / "photo.png", *QUICK],
        "batch-size-zero": lambda d: ["batch", d.inp / "manifest.jsonl", "--out", d.out / "run", "--batch-size", "0", *QUICK],
        "batch-size-negative": lambda d: ["batch", d.inp / "manifest.jsonl", "--out", d.out / "run", "--batch-size=-3",
                                          *QUICK],
        "out-below-a-file": lambda d: ["batch", d.inp / "manifest.jsonl", "--out", d.inp / "photo.png" / "run", *QUICK],
    }

    def setup_ok(dirs):
        dirs.copy("photo.png")
        (dirs.inp / "manifest.jsonl").write_text(_line() + "\n")

    for name, argv in odd_runs.items():
        cases.append(Case("manifests", name, "batch", lambda d, s, a=argv: a(d), True,
                          setup_ok))
    return cases


# ------------------------------------------------------------------------------- sessions
def _session_setup(change: Callable[[Path], None] | None = None):
    def setup(dirs: Dirs) -> None:
        dirs.copy("photo.png", "victim.png")
        shutil.copytree(dirs.fixtures / "session", dirs.out / "session")
        if change is not None:
            change(dirs.out / "session")
    return setup


def _edit_state(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        state = json.loads((folder / "session.json").read_text())
        change(state)
        (folder / "session.json").write_text(json.dumps(state))
    return edit


SESSION_DAMAGE: dict[str, Callable[[Path], None]] = {
    "intact": lambda f: None,
    "turn-image-deleted": lambda f: (f / "turn-001.png").unlink(),
    "input-copy-deleted": lambda f: (f / "turn-000.png").unlink(),
    "mask-deleted": lambda f: (f / "mask-001.png").unlink(),
    "turn-image-truncated": lambda f: (f / "turn-001.png").write_bytes((f / "turn-001.png").read_bytes()[:50]),
    "turn-image-other-size": lambda f: Image.new("RGB", (9, 13)).save(f / "turn-001.png"),
    "state-truncated": lambda f: (f / "session.json").write_text((f / "session.json").read_text()[:40]),
    "state-empty": lambda f: (f / "session.json").write_text(""),
    "state-not-utf8": lambda f: (f / "session.json").write_bytes(b"\xff\xfe{"),
    "state-list": lambda f: (f / "session.json").write_text("[]"),
    "state-no-turns": _edit_state(lambda s: s.pop("turns")),
    "state-turns-not-list": _edit_state(lambda s: s.update(turns="many")),
    "state-turn-missing-keys": _edit_state(lambda s: s["turns"][0].clear()),
    # Turn files that point out of the session folder, at a file of the case's own inputs (never elsewhere).
    "state-turn-path-escape": _edit_state(lambda s: s["turns"][0].update(image="../../in/victim.png")),
    "state-turn-absolute": lambda f: _edit_state(lambda s: s["turns"][0].update(
        image=str(f.parent.parent / "in" / "victim.png")))(f),
    "state-size-wrong": _edit_state(lambda s: s.update(size=[5])),
    "state-recipe-missing": _edit_state(lambda s: s["turns"][0].pop("recipe")),
    "state-folder": lambda f: ((f / "session.json").unlink(), (f / "session.json").mkdir()),
    "undone-is-a-file": lambda f: (f / "undone").write_text("x"),
}


def session_cases() -> list[Case]:
    cases = []
    for name, damage in SESSION_DAMAGE.items():
        setup = _session_setup(damage)
        damaged_state = name.startswith("state-")
        cases += [
            Case("sessions", f"{name}: apply", "cli", lambda d, s: [
                "session", "apply", d.out / "session", "make it red", *ZONE, *QUICK],
                damaged_state or name in ("turn-image-deleted", "turn-image-truncated"), setup),
            Case("sessions", f"{name}: undo", "cli", lambda d, s: ["session", "undo", d.out / "session", *QUICK],
                 damaged_state or name == "undone-is-a-file", setup),
            Case("sessions", f"{name}: show", "cli", lambda d, s: ["session", "show", d.out / "session", *QUICK],
                 damaged_state, setup),
            Case("sessions", f"{name}: new over it", "cli", lambda d, s: [
                "session", "new", d.out / "session", d.inp / "photo.png", *QUICK], True,
                lambda d, _s=setup: (_s(d), d.copy("photo.png"))),
        ]
    cases += [
        Case("sessions", "new: folder is a file", "cli", lambda d, s: [
            "session", "new", d.out / "file", d.inp / "photo.png", *QUICK], True,
            lambda d: (d.copy("photo.png"), (d.out / "file").write_text("x"))),
        Case("sessions", "apply: no session", "cli", lambda d, s: [
            "session", "apply", d.out, "make it red", *ZONE, *QUICK], True),
        Case("sessions", "undo: twice", "cli", lambda d, s: ["session", "undo", d.out / "session", *QUICK], False,
             _session_setup()),
    ]
    return cases


# ------------------------------------------------------------------------------- campaign
def all_cases() -> list[Case]:
    return [*image_cases(), *mask_cases(), *box_cases(), *text_cases(), *number_cases(), *api_number_cases(),
            *file_cases(), *manifest_cases(), *session_cases()]


def select(cases: list[Case], every: int = 1) -> list[Case]:
    """Every ``every``-th case of each category (a reduced but representative campaign)."""
    by_category: dict[str, list[Case]] = {}
    for case in cases:
        by_category.setdefault(case.category, []).append(case)
    return [c for members in by_category.values() for c in members[::every]]


def tally(outcomes: Iterable[Outcome]) -> dict:
    """Per-category and total counts of cases, results and every counter."""
    categories: dict[str, dict] = {}
    for outcome in outcomes:
        entry = categories.setdefault(outcome.category, {"cases": 0, "ok": 0, "refused": 0, "crashed": 0, "failing": 0,
                                                         **{c: 0 for c in COUNTERS}})
        entry["cases"] += 1
        entry[outcome.result] += 1
        entry["failing"] += bool(outcome.problems)
        for counter in outcome.problems:
            entry[counter] += 1
    total = {key: sum(c[key] for c in categories.values()) for key in next(iter(categories.values()), {})}
    return {"categories": categories, "total": total}


@contextlib.contextmanager
def offline():
    """No case may reach the network (an unknown hub id must fail at once): offline mode for the
    Hugging Face libraries, even when they were imported before the campaign."""
    import huggingface_hub.constants as hub

    saved = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved[1]
        if saved[0] is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = saved[0]


@contextlib.contextmanager
def shared_models():
    """Load each model once for the whole campaign (as a server does): ``load_model`` memoised."""
    import regionedit.models as models

    original, cache = models.load_model, {}

    def load(name, device=None, dtype=None, allow_pickle=False, **kwargs):
        key = (name, str(device), str(dtype), allow_pickle, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original(name, device=device, dtype=dtype, allow_pickle=allow_pickle, **kwargs)
        return cache[key]

    models.load_model = load
    try:
        yield
    finally:
        models.load_model = original


def run_campaign(root: str | Path | None = None, every: int = 1, log=None, cases: list[Case] | None = None,
                 fixtures: bool = True) -> dict:
    """Build the fixtures, run every case in its own folder and count; the JSON of the benchmark.
    ``fixtures=False`` (for cases that need only ``photo.png``) skips the model-made fixtures."""
    from regionedit import app
    from regionedit.bench import machine

    keep = root is not None
    root = Path(root) if keep else Path(tempfile.mkdtemp(prefix="regionedit-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    with offline():
        if fixtures:
            state = build_fixtures(root / "fixtures", log)
        else:
            (root / "fixtures").mkdir(exist_ok=True)
            photo().save(root / "fixtures" / "photo.png")
            state = {"fixtures": root / "fixtures"}
    workspace_editors: dict = {}
    state.update(app=app, cwd=root / "cwd", tmp=root / "tmp",
                 workspace=lambda d: app.Workspace(d.out if d is not None else root / "cwd", editors=workspace_editors))
    state["cwd"].mkdir(exist_ok=True)
    state["tmp"].mkdir(exist_ok=True)
    chosen = select(cases if cases is not None else all_cases(), every)
    outcomes = []
    import torch

    # One thread per call: the campaign measures robustness, not speed, and on a busy machine several
    # threads per tiny-model call spin against each other (100× slower here).
    began, previous_cwd, previous_tmp, threads = time.perf_counter(), Path.cwd(), tempfile.tempdir, torch.get_num_threads()
    torch.set_num_threads(1)
    os.chdir(state["cwd"])
    tempfile.tempdir = str(state["tmp"])
    try:
        with offline(), shared_models():
            for number, case in enumerate(chosen):
                outcomes.append(run_case(case, root, number, state))
                if log is not None and outcomes[-1].problems:
                    log(f"FAIL {case.category} / {case.name}: {outcomes[-1].problems}")
    finally:
        os.chdir(previous_cwd)
        tempfile.tempdir = previous_tmp
        torch.set_num_threads(threads)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    counts = tally(outcomes)
    slowest = sorted(outcomes, key=lambda o: -o.seconds)[:5]
    return {
        "benchmark": "fuzz", "machine": machine(), "seconds": round(time.perf_counter() - began, 1),
        "models": ["tiny/ip2p", "tiny/sd", "tiny/pixel-ddpm"], "torch_threads_per_call": 1, **counts,
        "entries": {e: sum(o.entry == e for o in outcomes) for e in ("cli", "batch", "app", "api")},
        "failing": [{"category": o.category, "case": o.name, "entry": o.entry, "result": o.result, "reasons": o.problems}
                    for o in outcomes if o.problems],
        "slowest": [{"case": o.name, "seconds": o.seconds} for o in slowest],
    }
