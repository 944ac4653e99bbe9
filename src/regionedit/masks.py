"""Masks: one type (float B×1×H×W in [0, 1], 1 = editable), sources and operations.

Sources: an image file (any non-zero pixel is in), a box ``x0,y0,x1,y1`` in pixels of the input
image, or ``face:<part>`` — the region where that part of a toy-world face can appear (``eyes``,
``left_eye``, ``right_eye``, ``mouth``, ``glasses``, ``hat``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from regionedit.errors import RegionEditError
from regionedit.face_parts import PART_BOXES
from regionedit.images import read_pil


@dataclass
class LoadedMask:
    mask: torch.Tensor  # 1×1×H×W float in {0, 1}, at the image's size
    source: str
    notes: list[str] = field(default_factory=list)


def box_mask(box: tuple[float, float, float, float], size: tuple[int, int]) -> torch.Tensor:
    """1×1×H×W mask of the pixels whose centres lie in the box (x0, y0, x1, y1), in pixels."""
    width, height = size
    if len(box) != 4 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in box):
        raise RegionEditError(f"box must be four finite numbers x0,y0,x1,y1 in pixels, got {box}")
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise RegionEditError(f"box {box} is empty: it needs x0 < x1 and y0 < y1")
    xs = torch.arange(width) + 0.5
    ys = torch.arange(height) + 0.5
    inside = ((ys >= y0) & (ys < y1)).view(-1, 1) & ((xs >= x0) & (xs < x1)).view(1, -1)
    return inside.float().view(1, 1, height, width)


def face_part_mask(part: str, size: tuple[int, int]) -> torch.Tensor:
    """1×1×H×W mask of the box where ``part`` of a toy-world face can appear (any factor values)."""
    if part not in PART_BOXES:
        raise RegionEditError(f"unknown face part {part!r} (parts: {', '.join(sorted(PART_BOXES))})")
    width, height = size
    x0, y0, x1, y1 = PART_BOXES[part]
    return box_mask((x0 * width, y0 * width, x1 * width, y1 * width), size)


def load_mask(spec: str, size: tuple[int, int]) -> LoadedMask:
    """A mask for an image of ``size`` (width, height) from a file path, a box or ``face:<part>``."""
    if spec.startswith("face:"):
        return LoadedMask(face_part_mask(spec[5:], size), spec)
    parts = spec.split(",")
    if len(parts) == 4 and not Path(spec).exists():
        try:
            box = tuple(float(p) for p in parts)
        except ValueError:
            raise RegionEditError(f"mask box must be x0,y0,x1,y1 in pixels, got {spec!r}") from None
        return LoadedMask(box_mask(box, size), spec)
    path = Path(spec)
    if not path.exists():
        raise RegionEditError(f"mask not found: {spec} (give a mask image, a box x0,y0,x1,y1 or face:<part>)")
    image, notes = read_pil(path, "mask")
    array = np.asarray(image.convert("L"))
    mask = torch.from_numpy((array > 0).astype(np.float32)).view(1, 1, *array.shape)
    if (array.shape[1], array.shape[0]) != tuple(size):
        notes.append(f"mask {path} is {array.shape[1]}×{array.shape[0]}, resized to the image's {size[0]}×{size[1]}")
        mask = resize(mask, (size[1], size[0]))
    return LoadedMask(mask, spec, notes)


def resize(mask: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """Resize to (H, W) by area averaging (or nearest when enlarging) and binarise."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    larger = size[0] > mask.shape[-2] or size[1] > mask.shape[-1]
    resized = F.interpolate(mask.float(), size=size, mode="nearest" if larger else "area")
    return (resized >= threshold).float()


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow the mask by ``pixels`` (a square structuring element)."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels)


def pad_to(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad on the right and bottom to (H, W), as images are padded for the model."""
    return F.pad(mask, (0, size[1] - mask.shape[-1], 0, size[0] - mask.shape[-2]))


def check_region(mask: torch.Tensor, name: str = "mask", needs_complement: bool = False) -> None:
    """Refuse an empty mask, and one covering everything where a complement is needed."""
    if mask.sum() == 0:
        raise RegionEditError(f"{name} is empty: it selects no pixel at the model's resolution")
    if needs_complement and mask.min() > 0:
        raise RegionEditError(f"{name} covers the whole image: the method needs a region outside it")


def erode(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    if pixels <= 0:
        return mask
    return 1 - F.max_pool2d(1 - mask.float(), 2 * pixels + 1, stride=1, padding=pixels)


def close(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Morphological closing (dilate, then erode): bridges gaps narrower than 2·pixels."""
    return erode(dilate(mask, pixels), pixels)


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """Fill every hole enclosed by the mask (scipy's binary_fill_holes), per image."""
    from scipy.ndimage import binary_fill_holes

    filled = [torch.from_numpy(binary_fill_holes(m[0].cpu().numpy() > 0.5)) for m in mask]
    return torch.stack(filled).unsqueeze(1).float().to(mask.device)


def ideal_low_pass(images: torch.Tensor, radius: float) -> torch.Tensor:
    """Keep the frequencies within ``radius`` of the centre of the (shifted) 2-D spectrum."""
    height, width = images.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(images.float()), dim=(-2, -1))
    ys = torch.arange(height, device=images.device) - height // 2
    xs = torch.arange(width, device=images.device) - width // 2
    keep = (ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2) <= radius**2
    spectrum = spectrum * keep
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real


def fft_edge_smoother(edited: torch.Tensor, original: torch.Tensor, dilated: torch.Tensor, radius: float,
                      threshold: float = 0.1, closing: int = 2) -> torch.Tensor:
    """ZONE's edge smoother: g(F⁻¹(H(F(I_L,d)) − H(F(I_G,d)))) with I_·,d the images inside the
    dilated mask, H an ideal low-pass filter of radius D0, and g = binarise (mean absolute change
    over channels ≥ ``threshold``, images in [0, 1]), morphological closing and hole filling."""
    change = ideal_low_pass(edited * dilated, radius) - ideal_low_pass(original * dilated, radius)
    binary = (change.abs().mean(dim=1, keepdim=True) >= threshold).float() * dilated
    return fill_holes(close(binary, closing))


def region_iou(segments: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """IoU of each segment (N×H×W, bool) with the coarse mask (H×W): ZONE's rIoU."""
    coarse = coarse.bool().view(1, *segments.shape[-2:])
    inter = (segments & coarse).flatten(1).sum(1).float()
    union = (segments | coarse).flatten(1).sum(1).float()
    return inter / union.clamp_min(1)


def select_by_region_iou(segments: torch.Tensor, coarse: torch.Tensor, union_above: float | None = None) -> tuple[torch.Tensor, float]:
    """The segment with the highest rIoU (or, with ``union_above``, the union of all segments whose
    rIoU reaches it, falling back to the best one). Returns (H×W bool mask, best rIoU)."""
    if len(segments) == 0:
        return torch.zeros(coarse.shape[-2:], dtype=torch.bool), 0.0
    scores = region_iou(segments, coarse)
    best = int(scores.argmax())
    if union_above is not None and (scores >= union_above).any():
        return segments[scores >= union_above].any(dim=0), float(scores[best])
    return segments[best], float(scores[best])
