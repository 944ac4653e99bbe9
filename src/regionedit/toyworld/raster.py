"""Vectorised, anti-aliased 2-D rasterisation with signed distance functions (torch, CPU or GPU).

Shapes are signed distance fields (negative inside) evaluated on a supersampled grid of sample
centres in normalised coordinates (x right, y down, both in [0, 1]). Each field becomes a smooth
coverage (a half-sample ramp across the edge), layers are composited back to front, and the result
is box-filtered down to the output size: supersampling plus analytic edges.

Parameters are batched as (B, 1, 1) tensors so one call draws a whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Window = tuple[float, float, float, float]  # (x0, y0, x1, y1) in normalised coordinates


@dataclass(kw_only=True)
class RenderedBatch:
    """What a world renders: B×3×H×W images in [0, 1], B×H×W labels (which part or object each pixel
    shows), optionally the per-layer supports, and the seeds the batch was drawn from."""

    images: torch.Tensor
    labels: torch.Tensor
    support: torch.Tensor | None = None
    seeds: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return self.images.shape[-1]


@dataclass
class Region:
    """Where a layer is drawn: a window shared by the batch (slices) or one patch per image (indices).

    ``x`` (·, 1, w) and ``y`` (·, h, 1) are the sample coordinates inside it.
    """

    rows: slice | torch.Tensor  # slice, or (B, h, 1) sample-row indices
    cols: slice | torch.Tensor  # slice, or (B, 1, w) sample-column indices
    x: torch.Tensor
    y: torch.Tensor
    flat: torch.Tensor | None = None  # per image: (B, h·w) indices into the flattened sample grid
    flat_out: torch.Tensor | None = None  # per image: (B, h·w/ss²) indices into the flattened output grid

    @property
    def per_image(self) -> bool:
        return self.flat is not None

    @property
    def shape(self) -> tuple[int, int]:
        if self.per_image:
            return self.rows.shape[1], self.cols.shape[2]
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start


@dataclass
class _Layer:
    group: int | torch.Tensor  # one group for the batch, or (B,) per image
    region: Region
    alpha: torch.Tensor  # (B, h, w)
    colour: torch.Tensor  # (B, 3), or per sample (B or 1, h, w, 3)


@dataclass
class Canvas:
    """A supersampled grid on which layers are stacked, then flattened in :meth:`result`.

    Each layer is drawn only inside a region that holds its whole shape: a fixed window, or a patch
    that follows each image's object. Layers are composited back to front; the visible weight of
    layer l is α_l · Π_{k above l} (1 − α_k), computed from the top down, so a layer that is absent
    (α = 0) leaves every other pixel bit for bit as it was.
    """

    batch: int
    size: int | tuple[int, int]
    supersample: int = 2
    device: torch.device | str = "cpu"
    groups: tuple[str, ...] = ()
    track_support: bool = False
    layers: list[_Layer] = field(default_factory=list)

    def __post_init__(self):
        height, width = (self.size, self.size) if isinstance(self.size, int) else self.size
        self.height, self.width = height, width
        ss = self.supersample
        self.rows, self.cols = height * ss, width * ss
        # x spans [0, 1] across the width; y uses the same unit (square pixels), growing downwards.
        self.sample_size = 1.0 / self.cols
        self.ys = (torch.arange(self.rows, device=self.device, dtype=torch.float32) + 0.5) * self.sample_size
        self.xs = (torch.arange(self.cols, device=self.device, dtype=torch.float32) + 0.5) * self.sample_size

    def _aligned(self, start: int, stop: int, limit: int) -> tuple[int, int]:
        """Widen [start, stop) to whole output pixels inside [0, limit)."""
        ss = self.supersample
        return max(0, start // ss * ss), min(limit, -(-stop // ss) * ss)

    def window(self, window: Window | None = None) -> Region:
        """A region shared by the whole batch (None: the full canvas)."""
        if window is None:
            rows, cols = slice(0, self.rows), slice(0, self.cols)
        else:
            x0, y0, x1, y1 = window
            scale = 1.0 / self.sample_size
            cols = slice(*self._aligned(math.floor(x0 * scale) - 1, math.ceil(x1 * scale) + 1, self.cols))
            rows = slice(*self._aligned(math.floor(y0 * scale) - 1, math.ceil(y1 * scale) + 1, self.rows))
        return Region(rows, cols, self.xs[cols].view(1, 1, -1), self.ys[rows].view(1, -1, 1))

    def patch(self, cx: torch.Tensor, cy: torch.Tensor, half_w: float, half_h: float) -> Region:
        """A patch of fixed size around (cx, cy) for each image, kept inside the canvas."""
        ss, scale = self.supersample, 1.0 / self.sample_size
        w = min(self.cols, -(-(math.ceil(2 * half_w * scale) + 2) // ss) * ss)
        h = min(self.rows, -(-(math.ceil(2 * half_h * scale) + 2) // ss) * ss)
        col0 = ((cx.to(self.device).float() - half_w) * scale).floor().long() - 1
        row0 = ((cy.to(self.device).float() - half_h) * scale).floor().long() - 1
        col0 = (col0.clamp(0, self.cols - w) // ss) * ss
        row0 = (row0.clamp(0, self.rows - h) // ss) * ss
        cols = col0.view(-1, 1, 1) + torch.arange(w, device=self.device).view(1, 1, -1)
        rows = row0.view(-1, 1, 1) + torch.arange(h, device=self.device).view(1, -1, 1)
        flat = (rows * self.cols + cols).view(len(cx), -1)
        out_rows, out_cols = rows[:, ::ss] // ss, cols[:, :, ::ss] // ss
        flat_out = (out_rows * self.width + out_cols).view(len(cx), -1)
        return Region(rows, cols, self.xs[cols], self.ys[rows], flat, flat_out)

    def coverage(self, sdf: torch.Tensor) -> torch.Tensor:
        """Smooth inside-ness in [0, 1] from a signed distance (a one-sample ramp across the edge)."""
        return (0.5 - sdf / self.sample_size).clamp(0.0, 1.0)

    def fill(self, group, colour: torch.Tensor, shape, window: Window | Region | None = None, where=None) -> None:
        """Draw ``shape(x, y) → signed distance`` in ``colour`` (B, 3) as a layer of ``group``.

        ``group`` is a group name, or a (B,) tensor of group indices (one per image). ``window``
        (a :class:`Window`, a :class:`Region` or None for the full canvas) must contain the whole
        shape; ``where`` (B,) switches the layer off per image.
        """
        region = window if isinstance(window, Region) else self.window(window)
        self.blend(group, colour, self.coverage(shape(region.x, region.y)), region, where)

    def blend(self, group, colour: torch.Tensor, alpha: torch.Tensor, region: Region, where=None) -> None:
        """Add a layer with a given coverage ``alpha`` over ``region``.

        ``colour`` is (B, 3) or (3,), or one colour per sample (B or 1, h, w, 3).
        """
        alpha = alpha.expand(self.batch, *region.shape)
        if where is not None:
            alpha = alpha * where.to(alpha.device, alpha.dtype).view(-1, 1, 1)
        group = self.groups.index(group) if isinstance(group, str) else group.to(self.device)
        colour = colour.to(alpha.device, torch.float32)
        colour = colour.expand(self.batch, 3) if colour.dim() <= 2 else colour
        self.layers.append(_Layer(group, region, alpha, colour))

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.supersample) if self.supersample > 1 else x

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(images B×3×H×W quantised to 8-bit steps, part labels B×H×W, visible support B×G×H×W or None).

        Labels are the group with the largest visible weight; the support of a group is every output
        pixel where any of its samples is visible at all (the footprint of an edit to that group).
        """
        ss, batch = self.supersample, self.batch
        transmittance = torch.ones(batch, self.rows, self.cols, device=self.device)
        image = torch.zeros(batch, self.rows, self.cols, 3, device=self.device)  # channels last
        weights = torch.zeros(batch, len(self.groups), self.height, self.width, device=self.device)
        support = torch.zeros_like(weights) if self.track_support else None
        for layer in reversed(self.layers):
            region = layer.region
            colour = layer.colour.view(batch, 1, 1, 3) if layer.colour.dim() == 2 else layer.colour
            if region.per_image:
                visible = self._composite_patch(layer, colour, transmittance, image)
            else:
                at = (slice(None), region.rows, region.cols)
                visible = layer.alpha * transmittance[at]
                transmittance[at] -= visible
                image[at] += visible.unsqueeze(-1) * colour
            coverage = self.downsample(visible.unsqueeze(1))[:, 0]
            _accumulate(weights, layer.group, region, coverage, ss)
            if support is not None:
                _accumulate(support, layer.group, region, F.max_pool2d((visible > 0).float().unsqueeze(1), ss)[:, 0], ss)
        image = (self.downsample(image.permute(0, 3, 1, 2)).clamp(0, 1) * 255).round() / 255
        return image, _argmax_groups(weights), support.bool() if support is not None else None

    def _composite_patch(self, layer: _Layer, colour, transmittance, image) -> torch.Tensor:
        """Composite a per-image patch through flat gather/scatter (fast on the CPU)."""
        batch, (h, w) = self.batch, layer.region.shape
        flat = layer.region.flat
        t = transmittance.view(batch, -1)
        before = t.gather(1, flat).view(batch, h, w)
        visible = layer.alpha * before
        t.scatter_(1, flat, (before - visible).view(batch, -1))
        pixels = image.view(batch, -1, 3)
        index = flat.unsqueeze(-1).expand(-1, -1, 3)
        updated = pixels.gather(1, index) + (visible.unsqueeze(-1) * colour).view(batch, -1, 3)
        pixels.scatter_(1, index, updated)
        return visible


def _accumulate(target: torch.Tensor, group, region: Region, values: torch.Tensor, ss: int) -> None:
    """target[b, group_b, pixels of region] += values (output resolution), shared or per-image group."""
    batch, groups, height, width = target.shape
    if isinstance(group, int) and not region.per_image:
        target[:, group, region.rows.start // ss : region.rows.stop // ss, region.cols.start // ss : region.cols.stop // ss] += values
        return
    if region.per_image:
        flat = region.flat_out
    else:
        rows = torch.arange(region.rows.start // ss, region.rows.stop // ss, device=target.device)
        cols = torch.arange(region.cols.start // ss, region.cols.stop // ss, device=target.device)
        flat = (rows.view(-1, 1) * width + cols.view(1, -1)).view(1, -1).expand(batch, -1)
    group = torch.as_tensor(group, device=target.device).expand(batch)
    index = flat + (group * height * width).view(-1, 1)
    target.view(batch, -1).scatter_add_(1, index, values.reshape(batch, -1))


def _argmax_groups(weights: torch.Tensor) -> torch.Tensor:
    """argmax over dim 1 (faster than torch.argmax over a small strided dim on the CPU; first wins ties)."""
    best, labels = weights[:, 0].clone(), torch.zeros(weights[:, 0].shape, dtype=torch.long, device=weights.device)
    for group in range(1, weights.shape[1]):
        better = weights[:, group] > best
        best = torch.where(better, weights[:, group], best)
        labels[better] = group
    return labels


# ------------------------------------------------------------------------------ signed distances
def max_(value, floor: float):
    """max(value, floor) for a tensor or a plain number."""
    return value.clamp_min(floor) if isinstance(value, torch.Tensor) else max(value, floor)


def circle(x, y, cx, cy, r):
    return torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def ellipse(x, y, cx, cy, rx, ry):
    """Approximate signed distance of an axis-aligned ellipse (exact on the axes, good near the edge)."""
    qx, qy = (x - cx) / rx, (y - cy) / ry
    k = torch.sqrt(qx**2 + qy**2)
    gradient = torch.sqrt((qx / rx) ** 2 + (qy / ry) ** 2).clamp_min(1e-6)
    return k * (k - 1.0) / gradient


def box(x, y, cx, cy, half_w, half_h, radius=0.0):
    dx, dy = (x - cx).abs() - half_w + radius, (y - cy).abs() - half_h + radius
    outside = torch.sqrt(dx.clamp_min(0) ** 2 + dy.clamp_min(0) ** 2)
    return outside + torch.maximum(dx, dy).clamp_max(0) - radius


def segment(x, y, ax, ay, bx, by, thickness):
    """A capsule: points within thickness/2 of the segment a–b."""
    px, py, vx, vy = x - ax, y - ay, bx - ax, by - ay
    t = ((px * vx + py * vy) / max_(vx * vx + vy * vy, 1e-12)).clamp(0, 1)
    return torch.sqrt((px - t * vx) ** 2 + (py - t * vy) ** 2) - thickness / 2


def ring(x, y, cx, cy, r, thickness):
    return circle(x, y, cx, cy, r).abs() - thickness / 2


def triangle_up(x, y, cx, base_y, half_w, height):
    """Isosceles triangle with its base on y = base_y (from cx - half_w to cx + half_w), apex above."""
    hx, dy = (x - cx).abs(), y - base_y
    slanted = (height * hx - half_w * dy - half_w * height) / torch.sqrt(height**2 + half_w**2)
    return torch.maximum(slanted, dy)


def star5(x, y, cx, cy, r, inner=0.45):
    """Regular five-pointed star, one point up, outer radius r and inner radius inner·r.

    Folded into one half-point by symmetry, the distance is to the line from the tip to the inner
    vertex (negative inside): exact near the edges, which is all the anti-aliasing needs.
    """
    sector = 2 * math.pi / 5
    angle = torch.atan2(x - cx, -(y - cy))  # 0 at the top
    a = torch.remainder(angle + sector / 2, sector) - sector / 2
    rho = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    px, py = rho * torch.cos(a), rho * torch.sin(a).abs()
    ex = inner * r * math.cos(sector / 2) - r
    ey = inner * r * math.sin(sector / 2)
    return ((px - r) * ey - py * ex) / torch.sqrt(ex**2 + ey**2)


def flatten_layers(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite (alpha (B, h, w), colour (B, 3)) layers, bottom first, into one layer.

    Returns the combined alpha and a per-sample colour (B, h, w, 3); drawing the result equals
    drawing the layers one by one, up to float rounding.
    """
    alpha = torch.zeros_like(layers[0][0])
    premultiplied = torch.zeros(*alpha.shape, 3, device=alpha.device)
    for layer_alpha, colour in layers:
        premultiplied = premultiplied * (1 - layer_alpha).unsqueeze(-1) + layer_alpha.unsqueeze(-1) * colour.view(-1, 1, 1, 3)
        alpha = alpha + layer_alpha * (1 - alpha)
    return alpha, premultiplied / alpha.clamp_min(1e-12).unsqueeze(-1)


def in_chunks(render, params: dict[str, torch.Tensor], chunk: int = 128, **options):
    """Call ``render(params, **options)`` on slices of the batch and concatenate the outputs.

    Rendering cost per image grows with the batch once tensors leave the cache; 128 is about best.
    """
    batch = next(iter(params.values())).shape[0]
    if batch <= chunk:
        return render(params, **options)
    parts = [render({k: v[i : i + chunk] for k, v in params.items()}, **options) for i in range(0, batch, chunk)]
    return tuple(None if part[0] is None else torch.cat(part) for part in zip(*parts, strict=True))
