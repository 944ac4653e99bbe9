"""Image files at the API edge: reading with conversion notes, tensors, atomic PNG writing.

Pixel convention, the one place it is defined:

- at the API edge (editors, masks, metrics, front ends) an image is a PIL RGB image or a float
  tensor 1×3×H×W in **[0, 1]**; a mask is a float tensor 1×1×H×W in [0, 1], 1 = editable;
- inside the models (the backend's ``fit_image``/``decode``, the samplers) pixels are in **[-1, 1]**.

The conversions, and nothing else, cross that line: :func:`to_model_range` /
:func:`from_model_range` between the two tensor ranges, :func:`pil_to_unit` / :func:`unit_to_pil`
between PIL and [0, 1] tensors (:func:`pil_to_tensor` / :func:`tensor_to_pil` are their model-range
counterparts, for the backend), :func:`mask_to_pil` for masks.

Reading (:func:`load_image`) turns an image the way a viewer shows it: the EXIF orientation of a
phone photo is applied, an animation gives its first frame, and each such step leaves a note.
Images above :func:`max_image_pixels` (default 64 megapixels, ``REGIONEDIT_MAX_IMAGE_PIXELS`` to
change it) are refused from their header, before any pixel is decoded: a "decompression bomb" of a
few kilobytes cannot exhaust the memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from regionedit.errors import RegionEditError

RECIPE_KEY = "regionedit"
DEFAULT_MAX_IMAGE_PIXELS = 64 * 2**20
EXIF_ORIENTATION = 0x0112


def max_image_pixels() -> int:
    """The largest image (width × height) :func:`load_image` decodes."""
    value = os.environ.get("REGIONEDIT_MAX_IMAGE_PIXELS", "")
    try:
        return int(value) if value else DEFAULT_MAX_IMAGE_PIXELS
    except ValueError:
        raise RegionEditError(f"REGIONEDIT_MAX_IMAGE_PIXELS must be an integer, got {value!r}") from None


@dataclass
class LoadedImage:
    """An RGB image and the notes on what was converted to get it."""

    image: Image.Image
    notes: list[str] = field(default_factory=list)


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Read any image file as 8-bit RGB; every conversion is explained in ``notes``."""
    path = Path(path)
    image, notes = read_pil(path)
    loaded = to_rgb(image, name=str(path))
    loaded.notes[:0] = notes
    if image.mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
        loaded.notes.append(f"{path}: 16 bits per channel reduced to 8")
    return loaded


def read_pil(path: str | os.PathLike, what: str = "image") -> tuple[Image.Image, list[str]]:
    """Decode an image file as a viewer shows it (EXIF orientation applied, first frame of an
    animation), refusing files above :func:`max_image_pixels`; notes say what was done."""
    path = Path(path)
    if not path.exists():
        raise RegionEditError(f"{what} not found: {path}")
    if path.is_dir():
        raise RegionEditError(f"expected an {what} file, got a folder: {path}")
    limit = max_image_pixels()
    notes = []
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > limit:
                raise RegionEditError(_too_large(what, path, f"{width}×{height} = {width * height:,}", limit))
            frames = getattr(opened, "n_frames", 1)
            if frames > 1:
                opened.seek(0)
                notes.append(f"{path}: an animation of {frames} frames; its first frame is used")
            opened.load()
            orientation = opened.getexif().get(EXIF_ORIENTATION, 1)
            image = ImageOps.exif_transpose(opened) if orientation not in (1, None) else opened.copy()
            if orientation not in (1, None):
                notes.append(f"{path}: EXIF orientation {orientation} applied (the image is turned upright)")
    except RegionEditError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow refuses in open() above twice its own limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise RegionEditError(_too_large(what, path, f"{int(found[1]):,}" if found else "too many", limit)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        raise RegionEditError(f"cannot read {what} {path}: not an image file or a damaged one ({exc.__class__.__name__})") from None
    return image, notes


def _too_large(what: str, path: Path, size: str, limit: int) -> str:
    return (f"{what} {path} is {size} pixels, above the limit of {limit:,} (a decompression bomb or a very large "
            "photo; set REGIONEDIT_MAX_IMAGE_PIXELS to raise it)")


def _png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG header (Pillow silently reads 16-bit colour PNGs as 8-bit)."""
    with open(path, "rb") as handle:
        header = handle.read(26)
    return header[24] if header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) == 26 else None


def to_rgb(image: Image.Image, name: str = "image") -> LoadedImage:
    """Convert a PIL image of any mode to 8-bit RGB, with a note for each lossy step."""
    notes: list[str] = []
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if mode.startswith("I") and array.max(initial=0) > 255 else 255.0
        if mode == "F":
            high = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        array = np.clip(np.round(array / high * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(array)
        notes.append(f"{name}: high-bit-depth grayscale ({mode}) converted to 8-bit RGB")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append(f"{name}: transparent pixels composited over white")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
        notes.append(f"{name}: alpha channel dropped")
    elif mode in ("L", "1"):
        image = image.convert("RGB")
        notes.append(f"{name}: grayscale converted to RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
        notes.append(f"{name}: {mode} converted to RGB")
    return LoadedImage(image=image, notes=notes)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB → float tensor 1×3×H×W in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_pil(x: torch.Tensor) -> Image.Image | list[Image.Image]:
    """Float tensor (B×)3×H×W in [-1, 1] → PIL RGB (a list for B > 1)."""
    batched = x.dim() == 4
    x = x if batched else x.unsqueeze(0)
    array = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    images = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in array]
    return images if batched and len(images) > 1 else images[0]


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] (the API edge) → [-1, 1] (the models)."""
    return x * 2 - 1


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] (the models) → [0, 1] (the API edge)."""
    return (x + 1) / 2


def pil_to_unit(image: Image.Image) -> torch.Tensor:
    """PIL RGB → float tensor 1×3×H×W in [0, 1]."""
    return from_model_range(pil_to_tensor(image))


def unit_to_pil(x: torch.Tensor) -> Image.Image | list[Image.Image]:
    """Float tensor (B×)3×H×W in [0, 1] → PIL RGB (a list for B > 1)."""
    return tensor_to_pil(to_model_range(x))


def mask_to_pil(mask: torch.Tensor) -> Image.Image:
    """A mask (1×1×H×W, 1×H×W or H×W in [0, 1]) → an 8-bit greyscale image, 255 = editable."""
    plane = mask.detach().float().cpu().reshape(mask.shape[-2:]).clamp(0, 1)
    return Image.fromarray((plane * 255).round().to(torch.uint8).numpy())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` then move ``tmp`` over ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def save_png(image: Image.Image, path: str | os.PathLike, recipe: dict | None = None) -> Path:
    """Write a PNG atomically, with the edit recipe as JSON in a text chunk."""
    info = PngImagePlugin.PngInfo()
    if recipe is not None:
        info.add_text(RECIPE_KEY, json.dumps(recipe, sort_keys=True, default=str))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def read_recipe(path: str | os.PathLike) -> dict | None:
    """The recipe stored by :func:`save_png`, or None."""
    with Image.open(path) as image:
        text = image.info.get(RECIPE_KEY)
    return json.loads(text) if text else None


def check_output_path(output: str | os.PathLike, inputs: Sequence[str | os.PathLike | None]) -> Path:
    """Refuse an output path that would overwrite one of the inputs."""
    output = Path(output)
    for candidate in inputs:
        if candidate is None:
            continue
        candidate = Path(candidate)
        if output.resolve() == candidate.resolve() or (
            output.exists() and candidate.exists() and output.samefile(candidate)
        ):
            raise RegionEditError(f"output {output} is an input file; choose another name (inputs are never overwritten)")
    if output.exists() and output.is_dir():
        raise RegionEditError(f"output {output} is a folder; give a file name")
    return output


def write_tensors(path: str | os.PathLike, tensors: dict, file_format: str, metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically, tagged with ``file_format``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": file_format, **metadata}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_tensors(path: str | os.PathLike, file_format: str, what: str) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file written by :func:`write_tensors` with ``file_format``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise RegionEditError(f"{what} file not found: {path}")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError, ValueError) as exc:
        raise RegionEditError(f"cannot read {what} {path}: not a safetensors file ({exc.__class__.__name__})") from None
    if metadata.get("format") != file_format:
        raise RegionEditError(f"{path} is not a regionedit {what} file")
    return tensors, metadata
