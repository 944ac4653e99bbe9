"""Procedural faces with named factors, a pixel mask per part, and ground-truth edits.

``generate_faces(seeds)`` samples the factors of each seed and renders them; ``Faces.replace``
re-renders with some factors changed and returns the target with the exact edit mask (every pixel
where a part touched by the change is visible, before or after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from regionedit.errors import RegionEditError
from regionedit.face_parts import PART_BOXES  # the renderer draws each small part inside its box
from regionedit.toyworld import raster
from regionedit.toyworld.random import uniforms

PARTS = ("background", "hair", "face", "left_eye", "right_eye", "mouth", "glasses", "hat")


@dataclass(frozen=True)
class Factor:
    name: str
    kind: str  # "continuous", "categorical" or "binary"
    parts: tuple[str, ...]  # parts whose pixels the factor changes
    low: float = 0.0
    high: float = 1.0
    choices: tuple[str, ...] = ()
    probability: float = 0.5  # of 1, for binary factors
    tolerance: float = 0.1  # a continuous value read within ± tolerance · range counts as right

    @property
    def classes(self) -> int:
        return len(self.choices) if self.kind == "categorical" else 0

    def sample(self, u: torch.Tensor) -> torch.Tensor:
        if self.kind == "continuous":
            return (self.low + (self.high - self.low) * u).float()
        if self.kind == "binary":
            return (u < self.probability).float()
        return (u * len(self.choices)).long().clamp_max(len(self.choices) - 1)

    def parse(self, value) -> float | int:
        """A user-facing value (number, bool or choice name) → the stored value."""
        if self.kind == "categorical":
            if isinstance(value, str):
                if value not in self.choices:
                    raise RegionEditError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
                return self.choices.index(value)
            if not 0 <= int(value) < len(self.choices):
                raise RegionEditError(f"{self.name} index must be in [0, {len(self.choices)}), got {value}")
            return int(value)
        if self.kind == "binary":
            return float(bool(value))
        if not self.low <= float(value) <= self.high:
            raise RegionEditError(f"{self.name} must be in [{self.low}, {self.high}], got {value}")
        return float(value)


EYES = ("left_eye", "right_eye")
FACTORS: dict[str, Factor] = {
    f.name: f
    for f in [
        Factor("skin_tone", "continuous", ("face",)),
        Factor("face_width", "continuous", ("face", "hair")),
        Factor("hair_colour", "categorical", ("hair",), choices=("black", "brown", "blond", "red", "gray")),
        Factor("hair_length", "continuous", ("hair",)),
        Factor("eye_openness", "continuous", EYES),
        Factor("eye_size", "continuous", EYES),
        Factor("iris_colour", "categorical", EYES, choices=("brown", "blue", "green", "gray")),
        Factor("mouth_curvature", "continuous", ("mouth",), low=-1.0, high=1.0),
        Factor("mouth_openness", "continuous", ("mouth",)),
        Factor("glasses", "binary", ("glasses",), probability=0.35),
        Factor("glasses_colour", "categorical", ("glasses",), choices=("black", "red", "blue", "gold")),
        Factor("hat", "binary", ("hat",), probability=0.3),
        Factor("hat_colour", "categorical", ("hat",), choices=("red", "blue", "green", "yellow", "purple")),
        Factor("background_colour", "categorical", ("background",),
               choices=("white", "slate", "sky", "beige", "pink", "mint")),
    ]
}

# A factor is only visible under a condition (the iris needs open eyes, a hat colour needs a hat).
VISIBLE_WHEN = {
    "iris_colour": ("eye_openness", 0.35),
    "glasses_colour": ("glasses", 0.5),
    "hat_colour": ("hat", 0.5),
}

PALETTE = {
    "skin_light": (0.99, 0.86, 0.74), "skin_dark": (0.42, 0.27, 0.17),
    "hair_colour": ((0.08, 0.07, 0.07), (0.40, 0.24, 0.12), (0.93, 0.80, 0.45), (0.72, 0.25, 0.10), (0.66, 0.66, 0.68)),
    "iris_colour": ((0.45, 0.27, 0.10), (0.20, 0.45, 0.85), (0.25, 0.60, 0.30), (0.55, 0.58, 0.60)),
    "glasses_colour": ((0.05, 0.05, 0.05), (0.80, 0.10, 0.10), (0.10, 0.25, 0.80), (0.85, 0.68, 0.20)),
    "hat_colour": ((0.80, 0.15, 0.15), (0.15, 0.30, 0.75), (0.15, 0.55, 0.25), (0.95, 0.80, 0.15), (0.50, 0.25, 0.65)),
    "background_colour": ((0.96, 0.96, 0.96), (0.42, 0.45, 0.52), (0.70, 0.83, 0.95), (0.93, 0.87, 0.74),
                          (0.96, 0.78, 0.84), (0.74, 0.92, 0.82)),
}


def sample_factors(seeds: Sequence[int]) -> dict[str, torch.Tensor]:
    """The factors of each seed (deterministic per seed)."""
    u = uniforms(seeds, len(FACTORS), stream=1)
    return {name: factor.sample(u[:, i]) for i, (name, factor) in enumerate(FACTORS.items())}


def _colour(name: str, index: torch.Tensor, device) -> torch.Tensor:
    return torch.tensor(PALETTE[name], device=device)[index.to(device)]


def render_faces(
    factors: dict[str, torch.Tensor],
    size: int = 64,
    supersample: int = 2,
    device: torch.device | str = "cpu",
    track_support: bool = False,
):
    """Render a batch of faces → (images B×3×H×W in [0, 1], labels B×H×W, support B×P×H×W | None)."""
    f = {k: v.to(device).view(-1, 1, 1) for k, v in factors.items()}
    batch = f["skin_tone"].shape[0]
    canvas = raster.Canvas(batch, size, supersample, device, PARTS, track_support)

    background = _colour("background_colour", factors["background_colour"], device)
    canvas.blend("background", background, torch.ones(1, 1, 1, device=device), canvas.window())

    face_rx = 0.20 + 0.07 * f["face_width"]
    hair = _colour("hair_colour", factors["hair_colour"], device)
    back_half_h = (0.34 + 0.40 * f["hair_length"]) / 2
    canvas.fill("hair", hair, lambda x, y: raster.box(x, y, 0.5, 0.16 + back_half_h, face_rx + 0.05, back_half_h, 0.08),
                window=(0.17, 0.15, 0.83, 0.91))

    light, dark = torch.tensor(PALETTE["skin_light"], device=device), torch.tensor(PALETTE["skin_dark"], device=device)
    skin = light + (dark - light) * factors["skin_tone"].to(device).view(-1, 1)

    def head(x, y):
        ears = torch.minimum(raster.ellipse(x, y, 0.5 - face_rx, 0.57, 0.035, 0.05),
                             raster.ellipse(x, y, 0.5 + face_rx, 0.57, 0.035, 0.05))
        return torch.minimum(raster.ellipse(x, y, 0.5, 0.55, face_rx, 0.29), ears)

    canvas.fill("face", skin, head, window=(0.19, 0.25, 0.81, 0.85))
    canvas.fill("face", skin * 0.82, lambda x, y: raster.segment(x, y, 0.5, 0.575, 0.49, 0.635, 0.018),
                window=(0.47, 0.56, 0.52, 0.65))
    canvas.fill("hair", hair, lambda x, y: torch.maximum(raster.ellipse(x, y, 0.5, 0.47, face_rx + 0.03, 0.34), y - 0.355),
                window=(0.19, 0.12, 0.81, 0.36))

    _draw_eyes(canvas, f, factors, device)
    _draw_mouth(canvas, f, device)

    def glasses(x, y):
        frames = torch.minimum(raster.ring(x, y, 0.405, 0.53, 0.075, 0.013), raster.ring(x, y, 0.595, 0.53, 0.075, 0.013))
        bridge = raster.segment(x, y, 0.48, 0.525, 0.52, 0.525, 0.012)
        arms = torch.minimum(raster.segment(x, y, 0.33, 0.52, 0.5 - face_rx, 0.54, 0.011),
                             raster.segment(x, y, 0.67, 0.52, 0.5 + face_rx, 0.54, 0.011))
        return torch.minimum(torch.minimum(frames, bridge), arms)

    canvas.fill("glasses", _colour("glasses_colour", factors["glasses_colour"], device), glasses,
                window=PART_BOXES["glasses"], where=factors["glasses"])

    hat = _colour("hat_colour", factors["hat_colour"], device)
    canvas.fill("hat", hat, lambda x, y: torch.minimum(raster.box(x, y, 0.5, 0.165, 0.19, 0.095, 0.03),
                                                       raster.box(x, y, 0.5, 0.265, 0.29, 0.022, 0.012)),
                window=PART_BOXES["hat"], where=factors["hat"])
    canvas.fill("hat", hat * 0.55, lambda x, y: raster.box(x, y, 0.5, 0.225, 0.19, 0.016),
                window=(0.3, 0.2, 0.7, 0.25), where=factors["hat"])
    return canvas.result()


def _draw_eyes(canvas: raster.Canvas, f: dict, factors: dict, device) -> None:
    rx = 0.045 + 0.025 * f["eye_size"]
    ry = rx * (0.06 + 0.74 * f["eye_openness"])
    white = torch.tensor([0.97, 0.97, 0.97], device=device)
    iris = _colour("iris_colour", factors["iris_colour"], device)
    dark = torch.tensor([0.05, 0.05, 0.05], device=device)
    for part, cx in (("left_eye", 0.405), ("right_eye", 0.595)):
        window = PART_BOXES[part]

        def sclera(x, y, cx=cx):
            return raster.ellipse(x, y, cx, 0.53, rx, ry)

        canvas.fill(part, white, sclera, window)
        canvas.fill(part, iris, lambda x, y, cx=cx: torch.maximum(raster.circle(x, y, cx, 0.53, 0.62 * rx), sclera(x, y)), window)
        canvas.fill(part, dark, lambda x, y, cx=cx: torch.maximum(raster.circle(x, y, cx, 0.53, 0.28 * rx), sclera(x, y)), window)
        canvas.fill(part, dark * 2, lambda x, y: sclera(x, y).abs() - 0.006, window)  # lid line: all a closed eye shows


def _draw_mouth(canvas: raster.Canvas, f: dict, device) -> None:
    half_w, y0 = 0.085, 0.715
    window = PART_BOXES["mouth"]

    def parts(x, y):
        u = ((x - 0.5) / half_w).clamp(-1, 1)
        centre = y0 + 0.04 * f["mouth_curvature"] * (0.5 - u**2)
        opening = 0.032 * f["mouth_openness"] * (1 - u**2)
        ends = (x - 0.5).abs() - half_w
        return (y - centre).abs(), opening, ends

    def lips(x, y):
        offset, opening, ends = parts(x, y)
        return torch.maximum(offset - 0.009 - opening, ends)

    def inside(x, y):
        offset, opening, ends = parts(x, y)
        return torch.maximum(offset - opening + 0.006, ends + 0.01)

    canvas.fill("mouth", torch.tensor([0.62, 0.20, 0.24], device=device), lips, window)
    canvas.fill("mouth", torch.tensor([0.22, 0.04, 0.07], device=device), inside, window)


@dataclass
class FaceEdit:
    source: Faces
    target: Faces
    mask: torch.Tensor  # B×1×H×W float: every pixel where a touched part is visible, before or after
    changes: dict[str, torch.Tensor]

    @property
    def changed(self) -> torch.Tensor:
        """B×1×H×W bool: the pixels that actually differ (always inside :attr:`mask`)."""
        return (self.source.images != self.target.images).any(dim=1, keepdim=True)


@dataclass
class Faces(raster.RenderedBatch):
    """A rendered batch of faces: their factors, with the images, part labels and optional supports."""

    factors: dict[str, torch.Tensor]

    def mask(self, part: str) -> torch.Tensor:
        """B×1×H×W float mask of the pixels where ``part`` is visible."""
        if part not in PARTS:
            raise RegionEditError(f"unknown face part {part!r} (parts: {', '.join(PARTS)})")
        return (self.labels == PARTS.index(part)).unsqueeze(1).float()

    def replace(self, **values) -> FaceEdit:
        """Re-render with factors changed (a value for all, or a (B,) tensor): the ground-truth edit."""
        unknown = set(values) - set(FACTORS)
        if unknown:
            raise RegionEditError(f"unknown face factor(s) {sorted(unknown)} (factors: {', '.join(FACTORS)})")
        changes = {}
        for name, value in values.items():
            stored = self.factors[name]
            if isinstance(value, torch.Tensor):
                changes[name] = value.to(stored.dtype).expand_as(stored)
            else:
                changes[name] = torch.full_like(stored, FACTORS[name].parse(value))
        device = self.images.device
        target = render(
            {**self.factors, **changes}, self.size, device=device, track_support=True, seeds=self.seeds
        )
        source = self if self.support is not None else render(self.factors, self.size, device=device, track_support=True, seeds=self.seeds)
        touched = sorted({PARTS.index(p) for name in values for p in FACTORS[name].parts})
        mask = (source.support[:, touched] | target.support[:, touched]).any(dim=1, keepdim=True).float()
        return FaceEdit(source, target, mask, changes)


def render(factors, size=64, device="cpu", track_support=False, seeds=None) -> Faces:
    images, labels, support = raster.in_chunks(render_faces, factors, size=size, device=device, track_support=track_support)
    return Faces(factors={k: v.to(device) for k, v in factors.items()}, images=images, labels=labels,
                 support=support, seeds=tuple(seeds) if seeds is not None else None)


def generate_faces(seeds: Sequence[int], size: int = 64, device="cpu", track_support: bool = False) -> Faces:
    """Sample and render the faces of ``seeds`` (same seed, same face, bit for bit)."""
    return render(sample_factors(seeds), size, device, track_support, seeds)


# ------------------------------------------------------------------------------ edit benchmark
# (name, instruction, factor, target value or None for "another class", feasible(factors) → bool mask)
FACE_EDITS = (
    ("open_eyes", "open the eyes", "eye_openness", 1.0, lambda f: f["eye_openness"] < 0.4),
    ("close_eyes", "close the eyes", "eye_openness", 0.0, lambda f: f["eye_openness"] > 0.6),
    ("smile", "make the person smile", "mouth_curvature", 1.0, lambda f: f["mouth_curvature"] < 0.0),
    ("frown", "make the person frown", "mouth_curvature", -1.0, lambda f: f["mouth_curvature"] > 0.0),
    ("open_mouth", "open the mouth", "mouth_openness", 1.0, lambda f: f["mouth_openness"] < 0.4),
    ("add_glasses", "add glasses", "glasses", 1.0, lambda f: f["glasses"] < 0.5),
    ("remove_glasses", "remove the glasses", "glasses", 0.0, lambda f: f["glasses"] > 0.5),
    ("add_hat", "add a hat", "hat", 1.0, lambda f: f["hat"] < 0.5),
    ("remove_hat", "remove the hat", "hat", 0.0, lambda f: f["hat"] > 0.5),
    ("hair_colour", "make the hair {value}", "hair_colour", None, lambda f: torch.ones_like(f["hat"], dtype=torch.bool)),
)


@dataclass
class FaceEdits:
    """One ground-truth factor edit per face, with an instruction."""

    edit: FaceEdit
    action: list[str]
    instruction: list[str]
    factor: list[str]
    source_value: torch.Tensor  # (B,) value of the edited factor before
    target_value: torch.Tensor  # (B,) and after

    def __len__(self) -> int:
        return len(self.action)

    def record(self, i: int) -> dict:
        return {"action": self.action[i], "instruction": self.instruction[i], "factor": self.factor[i],
                "source_value": float(self.source_value[i]), "target_value": float(self.target_value[i]),
                "seed": self.edit.source.seeds[i] if self.edit.source.seeds else None}


def generate_face_edits(seeds: Sequence[int], size: int = 64, device="cpu") -> FaceEdits:
    """A face and one feasible edit (open the eyes, add a hat, …) per seed, with the ground truth."""
    factors = sample_factors(seeds)
    u = uniforms(seeds, 2, stream=2)
    chosen, values = [], {name: factors[name].clone() for name in FACTORS}
    for i in range(len(seeds)):
        row = {k: v[i] for k, v in factors.items()}
        feasible = [e for e in FACE_EDITS if bool(e[4](row))]
        name, text, factor, value, _ = feasible[int(u[i, 0] * len(feasible))]
        if value is None:  # another class of a categorical factor
            choices = FACTORS[factor].choices
            value = (int(factors[factor][i]) + 1 + int(u[i, 1] * (len(choices) - 1))) % len(choices)
            text = text.format(value=choices[value])
        values[factor][i] = value
        chosen.append((name, text, factor))
    source = render(factors, size, device, track_support=True, seeds=seeds)
    target = render(values, size, device, track_support=True, seeds=seeds)
    touched = torch.zeros(len(seeds), len(PARTS), dtype=torch.bool)
    for i, (_, _, factor) in enumerate(chosen):
        touched[i, [PARTS.index(p) for p in FACTORS[factor].parts]] = True
    touched = touched.to(source.support.device).view(len(seeds), -1, 1, 1)
    mask = ((source.support | target.support) & touched).any(dim=1, keepdim=True).float()
    edit = FaceEdit(source, target, mask, {})
    index = torch.arange(len(seeds))
    names = [c[2] for c in chosen]
    return FaceEdits(
        edit=edit, action=[c[0] for c in chosen], instruction=[c[1] for c in chosen], factor=names,
        source_value=torch.stack([factors[n][i].float() for i, n in zip(index, names, strict=True)]),
        target_value=torch.stack([values[n][i].float() for i, n in zip(index, names, strict=True)]),
    )
