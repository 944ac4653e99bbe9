"""Mask sources: one way to say *where* to edit, for every method.

A mask source turns an image into the edit region (float 1×1×H×W in {0, 1}, 1 = editable, at the
image's size) with :meth:`MaskSource.resolve`, which returns a :class:`MaskResult` (the mask, notes,
a one-line description, and per-pixel scores where the source has them). Sources:

- :class:`FileMask` ``path``: a mask image, any non-zero pixel is in (resized to the image);
- :class:`BoxMask` ``x0,y0,x1,y1``: the pixels whose centres lie in the box (input pixels);
- :class:`FacePartMask` ``face:<part>``: where that part of a toy-world face can appear;
- :class:`BrushMask`: the strokes of a brush layer (the web editor's ImageEditor layer: alpha > 0;
  a greyscale layer: non-zero);
- :class:`TensorMask`: a mask tensor given directly (what the methods always accepted);
- :class:`TextMask` ``text:<words>``: a text-prompted segmenter (CLIPSeg, :mod:`regionedit.segment`)
  locates the words: score ≥ threshold (0..255, RDM's K);
- :class:`AttentionMask` ``attention:<instruction>``: ZONE's localisation — an instruct model edits
  the image while its cross-attention is recorded; start-token map minus end-token map below T
  (:mod:`regionedit.methods.zone`, steps 1–3);
- :class:`SegmentPick` ``segment:x,y`` or ``segment:#i``: a segment-everything provider
  (:mod:`regionedit.segment_everything`) lists scored segments (:func:`segment_records`); the pick
  is the smallest one containing the point (at least ``min_fraction`` of the image), or the i-th
  record (largest first).

Every method takes any source in place of its mask (a tensor is still accepted): RDM's ``mask``,
RBE's ``mask`` / JICA's ``masks`` (with ``image=``), Prompt-to-Prompt's ``blend_mask`` (local
blending from a mask instead of words) and ZONE's ``mask`` (replacing the attention localisation).
Each method resolves the source on the image it was given, at that image's size, so boxes and points
are in input pixels. :func:`resolve_source` does that and turns a source that cannot serve a method
(e.g. an attention mask with no instruct model to read it from) into one
:class:`~regionedit.errors.RegionEditError` naming both. :func:`parse_mask_spec` reads the command
line's ``--mask`` strings, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from regionedit import defaults
from regionedit.errors import RegionEditError
from regionedit.masks import box_mask, face_part_mask, load_mask, resize

DEFAULT_TEXT_THRESHOLD = defaults.RDM_THRESHOLD  # RDM's K (segment.DEFAULT_THRESHOLD)
DEFAULT_ATTENTION_THRESHOLD = defaults.ZONE_THRESHOLD  # ZONE's T
DEFAULT_ATTENTION_STEPS = defaults.ZONE_STEPS  # ZONE's step count
DEFAULT_MIN_FRACTION = 0.005
INSTRUCT_COMPANIONS = {"tiny/": "tiny/ip2p", "toy/scenes": "toy/scenes-instruct", "": "timbrooks/instruct-pix2pix"}
SPEC_HELP = ("a mask image, a box x0,y0,x1,y1 (pixels), face:<part>, text:<words>, attention:<instruction>, "
             "segment:x,y or segment:#i")


@dataclass
class MaskResult:
    """A resolved edit region: ``mask`` 1×1×H×W in {0, 1} at the image's size (1 = editable)."""

    mask: torch.Tensor
    source: str  # one line: what the mask came from
    notes: list[str] = field(default_factory=list)
    scores: torch.Tensor | None = None  # 1×1×H×W per-pixel scores where the source has them (text: 0..255)


@runtime_checkable
class MaskSource(Protocol):
    """Anything that finds the edit region of an image."""

    needs_pixels: bool  # False: only the image's size matters (file, box, face part, brush, tensor)

    def describe(self) -> str:
        """One line naming the source (its spec string where it has one)."""

    def resolve(self, image: torch.Tensor, model=None, method: str = "this method") -> MaskResult:
        """The region of ``image`` (1×3×H×W in [0, 1]); ``model``: the method's diffusion model;
        ``method``: its name, for error messages."""


# ------------------------------------------------------------------------------- images
def unit_image(image) -> torch.Tensor:
    """A PIL image or a 1×3×H×W tensor in [0, 1] → a float CPU tensor 1×3×H×W in [0, 1]."""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
    if torch.is_tensor(image) and image.dim() == 4 and image.shape[:2] == (1, 3):
        return image.detach().float().cpu()
    raise RegionEditError(f"image must be a PIL image or a 1×3×H×W tensor in [0, 1], got {type(image).__name__}")


def _size(image: torch.Tensor) -> tuple[int, int]:
    """(width, height) of a 1×3×H×W tensor."""
    return image.shape[-1], image.shape[-2]


def _binary(mask: torch.Tensor, image: torch.Tensor, what: str, notes: list[str]) -> torch.Tensor:
    """A mask as float {0, 1} 1×1×H×W at the image's size (resized with a note when it is not)."""
    if mask.dim() == 2:
        mask = mask[None, None]
    if mask.dim() != 4 or mask.shape[:2] != (1, 1):
        raise RegionEditError(f"{what} must be 1×1×H×W (or H×W), got shape {tuple(mask.shape)}")
    mask = (mask.detach().float().cpu() > 0.5).float()
    height, width = image.shape[-2:]
    if tuple(mask.shape[-2:]) != (height, width):
        notes.append(f"{what} is {mask.shape[-1]}×{mask.shape[-2]}, resized to the image's {width}×{height}")
        mask = resize(mask, (height, width))
    return mask


# ------------------------------------------------------------------------------- geometric sources
@dataclass(frozen=True)
class FileMask:
    """A mask image file: any non-zero pixel is editable; resized to the image if it differs."""

    needs_pixels = False
    path: str

    def describe(self) -> str:
        return str(self.path)

    def resolve(self, image, model=None, method="this method") -> MaskResult:
        loaded = load_mask(str(self.path), _size(image)) if Path(self.path).exists() else None
        if loaded is None:
            raise RegionEditError(f"mask not found: {self.path} (give {SPEC_HELP})")
        return MaskResult(loaded.mask, self.describe(), loaded.notes)


@dataclass(frozen=True)
class BoxMask:
    """A box (x0, y0, x1, y1) in the image's pixels."""

    needs_pixels = False
    box: tuple[float, float, float, float]

    def describe(self) -> str:
        return ",".join(f"{v:g}" for v in self.box)

    def resolve(self, image, model=None, method="this method") -> MaskResult:
        return MaskResult(box_mask(tuple(self.box), _size(image)), self.describe())


@dataclass(frozen=True)
class FacePartMask:
    """Where a part of a toy-world face can appear (eyes, left_eye, right_eye, mouth, glasses, hat)."""

    needs_pixels = False
    part: str

    def describe(self) -> str:
        return f"face:{self.part}"

    def resolve(self, image, model=None, method="this method") -> MaskResult:
        return MaskResult(face_part_mask(self.part, _size(image)), self.describe())


@dataclass(frozen=True, eq=False)
class BrushMask:
    """Brush strokes: an RGBA layer (alpha > 0 is in), a greyscale or RGB layer (non-zero is in), or
    a 1×1×H×W / H×W tensor (> 0.5 is in); resized to the image if it differs."""

    needs_pixels = False
    layer: Image.Image | torch.Tensor

    def describe(self) -> str:
        return "brush"

    def resolve(self, image, model=None, method="this method") -> MaskResult:
        notes: list[str] = []
        layer = self.layer
        if isinstance(layer, Image.Image):
            array = np.asarray(layer)
            drawn = array[..., 3] > 0 if layer.mode in ("RGBA", "LA") else np.asarray(layer.convert("L")) > 0
            layer = torch.from_numpy(drawn.astype(np.float32))
        mask = _binary(layer, image, "the brush layer", notes)
        return MaskResult(mask, self.describe(), notes)


@dataclass(frozen=True, eq=False)
class TensorMask:
    """A mask tensor given as is (1×1×H×W, 1 = editable). :func:`resolve_source` passes it to the
    method untouched (each method fits it to its working size); :meth:`resolve` binarises it at the
    image's size."""

    needs_pixels = False
    mask: torch.Tensor
    name: str = "mask"

    def describe(self) -> str:
        return self.name

    def resolve(self, image, model=None, method="this method") -> MaskResult:
        notes: list[str] = []
        return MaskResult(_binary(self.mask, image, self.name, notes), self.name, notes)


# ------------------------------------------------------------------------------- model sources
@dataclass(frozen=True, eq=False)
class TextMask:
    """Text located by a text-prompted segmenter (CLIPSeg): scores ≥ ``threshold`` (0..255)."""

    needs_pixels = True
    text: str
    segmenter: object = None  # a regionedit.segment.TextSegmenter
    threshold: float = DEFAULT_TEXT_THRESHOLD

    def describe(self) -> str:
        return f"text:{self.text}"

    def resolve(self, image, model=None, method="this method") -> MaskResult:
        if self.segmenter is None:
            raise RegionEditError(f"mask source {self.describe()!r} needs a text segmenter (CLIPSeg) for {method}: "
                                  "pass TextMask(text, segmenter=load_segmenter(...))")
        located = self.segmenter.locate(image, self.text, self.threshold)
        name = getattr(self.segmenter, "name", "segmenter")
        return MaskResult(located.mask.cpu(), f"{self.describe()} ({name}, threshold {self.threshold:g})",
                          scores=located.scores.cpu())


@dataclass(frozen=True, eq=False)
class AttentionMask:
    """ZONE's coarse mask: an instruct model follows ``instruction`` (one model, ZONE's guidance)
    while its cross-attention at 1/32 of the image size is recorded; (start-token map − end-token
    map) scaled to 0..255 and below ``threshold``. ``model``: the instruct model (default: the
    method's own, which must then be one)."""

    needs_pixels = True
    instruction: str
    model: object = None  # a DiffusionModel with an instruct UNet
    threshold: float = DEFAULT_ATTENTION_THRESHOLD
    num_inference_steps: int = DEFAULT_ATTENTION_STEPS
    guidance_scale: float = defaults.ZONE_TEXT_GUIDANCE
    image_guidance_scale: float = defaults.ZONE_IMAGE_GUIDANCE
    seed: int = 0

    def describe(self) -> str:
        return f"attention:{self.instruction}"

    def instruct_model(self, model, method: str):
        """The model whose attention is read: this source's, else the method's if it is instruct."""
        chosen = self.model if self.model is not None else model
        if chosen is None or not chosen.is_instruct:
            what = "no model" if chosen is None else f"model {chosen.name} ({chosen.conditioning})"
            raise RegionEditError(f"mask source {self.describe()!r} needs an instruct model (InstructPix2Pix-style) "
                                  f"and {method} has {what}: give the source an instruct model, or another mask source")
        return chosen

    def resolve(self, image, model=None, method="this method") -> MaskResult:
        from regionedit.core.attention import layers_at_resolution
        from regionedit.methods import zone

        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise RegionEditError("the attention mask's instruction is empty: say what to change, add or remove")
        instruct = self.instruct_model(model, method)
        pixels, fit = instruct.fit_image(image, instruct.native_resolution)
        padded = (fit.padded_size[1], fit.padded_size[0])
        latent = tuple(instruct.encode_source_image(pixels).shape[-2:])
        layers = layers_at_resolution(instruct.unet, latent, padded)
        _, maps = zone.fused_sampling(instruct, None, [self.instruction], pixels, torch.zeros(1), self.num_inference_steps,
                                      self.guidance_scale, self.image_guidance_scale, 0.0, [self.seed], layers, False)
        first, last = zone.instruction_token_span(instruct, self.instruction)
        coarse = zone.coarse_mask_from_attention(maps, first, last, padded, self.threshold).cpu()
        coarse = coarse[..., : fit.working_size[1], : fit.working_size[0]]
        notes = []
        if tuple(coarse.shape[-2:]) != tuple(image.shape[-2:]):
            notes.append(f"attention mask found at {fit.working_size[0]}×{fit.working_size[1]}, resized to the image")
            coarse = resize(coarse, tuple(image.shape[-2:]))
        if coarse.sum() == 0:
            raise RegionEditError(f"the attention of {instruct.name} for {self.instruction!r} selected nothing "
                                  f"(threshold {self.threshold:g}): raise the threshold or use another mask source")
        return MaskResult(coarse, f"{self.describe()} ({instruct.name}, threshold {self.threshold:g})", notes)


@dataclass
class SegmentRecord:
    """One segment of a segment-everything provider."""

    mask: torch.Tensor  # H×W bool
    area: int
    score: float | None  # the provider's quality score (SAM: predicted IoU); None where it gives none


def segment_records(image: torch.Tensor, generator=None) -> list[SegmentRecord]:
    """Every segment of ``image`` (1×3×H×W in [0, 1]) as scored records, largest first.

    ``generator``: a provider of :mod:`regionedit.segment_everything` (default: classical). Providers
    with a ``scored(image) -> (masks, scores)`` method give scores; others give None.
    """
    from regionedit.segment_everything import ClassicalSegmenter

    generator = generator or ClassicalSegmenter()
    if hasattr(generator, "scored"):
        masks, scores = generator.scored(image)
        scores = [float(s) for s in scores]
    else:
        masks = generator(image)
        scores = [None] * len(masks)
    records = [SegmentRecord(m.bool().cpu(), int(m.sum()), s) for m, s in zip(masks, scores, strict=True)]
    return sorted(records, key=lambda r: -r.area)


@dataclass(frozen=True, eq=False)
class SegmentPick:
    """One segment of segment-everything: at ``point`` (x, y in pixels) the smallest segment that
    contains it and covers at least ``min_fraction`` of the image (best score first among equals);
    or the ``index``-th record, largest first."""

    needs_pixels = True
    point: tuple[float, float] | None = None
    index: int | None = None
    generator: object = None  # a segment_everything provider (default: classical)
    min_fraction: float = DEFAULT_MIN_FRACTION

    def describe(self) -> str:
        return f"segment:{self.point[0]:g},{self.point[1]:g}" if self.point is not None else f"segment:#{self.index}"

    def resolve(self, image, model=None, method="this method") -> MaskResult:
        if (self.point is None) == (self.index is None):
            raise RegionEditError("a segment pick needs exactly one of a point (x, y) or an index")
        records = segment_records(image, self.generator)
        name = getattr(self.generator, "name", "classical")
        if self.index is not None:
            if not -len(records) <= self.index < len(records):
                raise RegionEditError(f"segment index {self.index} out of range: {name} found {len(records)} segments")
            chosen = records[self.index]
        else:
            chosen = self._at_point(records, image)
        score = "" if chosen.score is None else f", score {chosen.score:.3f}"
        mask = chosen.mask.float().view(1, 1, *chosen.mask.shape)
        return MaskResult(mask, f"{self.describe()} ({name}, {chosen.area} px{score})")

    def _at_point(self, records: list[SegmentRecord], image: torch.Tensor) -> SegmentRecord:
        x, y = self.point
        height, width = image.shape[-2:]
        if not (math.isfinite(x) and math.isfinite(y) and 0 <= x < width and 0 <= y < height):
            raise RegionEditError(f"segment point ({x:g}, {y:g}) is outside the {width}×{height} image")
        minimum = self.min_fraction * height * width
        hits = [r for r in records if r.mask[int(y), int(x)] and r.area >= minimum]
        if not hits:
            raise RegionEditError(f"no segment of at least {self.min_fraction:.1%} of the image contains ({x:g}, {y:g})")
        return min(hits, key=lambda r: (r.area, -(r.score or 0.0)))


# ------------------------------------------------------------------------------- specs and resolving
def _numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise RegionEditError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def parse_mask_spec(spec: str) -> MaskSource:
    """A ``--mask`` string → its source: ``face:<part>``, ``text:<words>``, ``attention:<instruction>``,
    ``segment:x,y`` / ``segment:#i``, ``box:x0,y0,x1,y1`` or ``x0,y0,x1,y1`` (unless such a file
    exists), ``file:<path>`` or a path. Companions (segmenter, instruct model, provider) are the
    front end's to attach (:func:`dataclasses.replace`)."""
    if not isinstance(spec, str) or not spec.strip():
        raise RegionEditError(f"the mask is empty: give {SPEC_HELP}")
    kind, sep, rest = spec.partition(":")
    if sep and len(kind) > 1:  # one letter before ':' is a Windows drive
        if kind == "face":
            return FacePartMask(rest)
        if kind == "text":
            if not rest.strip():
                raise RegionEditError("text: needs words naming the region, e.g. text:the ball")
            return TextMask(rest.strip())
        if kind == "attention":
            if not rest.strip():
                raise RegionEditError("attention: needs an instruction, e.g. attention:make the ball red")
            return AttentionMask(rest.strip())
        if kind == "segment":
            if rest.startswith("#"):
                try:
                    return SegmentPick(index=int(rest[1:]))
                except ValueError:
                    raise RegionEditError(f"segment:#i needs an integer index, got {spec!r}") from None
            return SegmentPick(point=_numbers(rest, 2, "segment:x,y"))
        if kind == "box":
            return BoxMask(_numbers(rest, 4, "box:x0,y0,x1,y1"))
        if kind == "file":
            return FileMask(rest)
    if len(spec.split(",")) == 4 and not Path(spec).exists():
        return BoxMask(_numbers(spec, 4, "mask box x0,y0,x1,y1"))
    return FileMask(spec)


def as_source(mask) -> MaskSource:
    """A source, a spec string or a tensor → a source."""
    if torch.is_tensor(mask):
        return TensorMask(mask)
    if isinstance(mask, str):
        return parse_mask_spec(mask)
    if isinstance(mask, MaskSource):
        return mask
    raise RegionEditError(f"a mask must be a tensor, a mask source or a spec string, got {type(mask).__name__}")


def resolve_source(mask, image=None, model=None, method: str = "this method",
                   size: tuple[int, int] | None = None) -> MaskResult:
    """Resolve a mask (source, spec or tensor) on ``image`` (PIL or 1×3×H×W in [0, 1]) for ``method``.

    Without ``image``, a source that needs only the size is resolved at ``size`` (width, height);
    one that needs the pixels (text, attention, segment pick) gets an error naming both. A tensor is
    returned as it is. Any failure is one :class:`RegionEditError`."""
    source = as_source(mask)
    if isinstance(source, TensorMask):  # as the methods always took it: values and size untouched
        return MaskResult(source.mask, source.name)
    if image is None:
        if source.needs_pixels or size is None:
            raise RegionEditError(f"mask source {source.describe()!r} needs the image for {method}: pass image=")
        image = torch.zeros(1, 3, size[1], size[0])
    return source.resolve(unit_image(image), model, method)


def instruct_companion(model) -> str | None:
    """The instruct model whose attention gives ``attention:`` masks for ``model``: itself when it is
    one, the instruct model of its family when it is text-to-image, None for unconditional models
    (no instruct model reads the same pictures: the toy faces, pixel DDPMs)."""
    if model.is_instruct:
        return model.name
    if not model.is_text_conditional:
        return None
    return next(name for prefix, name in INSTRUCT_COMPANIONS.items() if model.name.startswith(prefix))


__all__ = [
    "AttentionMask", "BoxMask", "BrushMask", "FacePartMask", "FileMask", "MaskResult", "MaskSource", "SegmentPick",
    "SegmentRecord", "TensorMask", "TextMask", "as_source", "instruct_companion", "parse_mask_spec", "resolve_source",
    "segment_records", "unit_image",
]
