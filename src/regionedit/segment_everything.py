"""Segment-everything providers for ZONE's mask refinement: every plausible segment of an image.

- ``classical`` (offline default): scikit-image's Felzenszwalb graph segmentation at several scales
  and SLIC superpixels at several sizes, each connected region one segment.
- ``sam:<model>``: Segment Anything through transformers with our own automatic mask generator:
  a grid of point prompts, three masks per point, filtering by predicted IoU and stability, and a
  pure-torch box NMS (transformers' mask-generation pipeline needs torchvision only for that NMS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from regionedit.errors import RegionEditError


def _unique_segments(label_maps: list[np.ndarray], min_area: int) -> torch.Tensor:
    from scipy.ndimage import label as connected

    segments, seen = [], set()
    for labels in label_maps:
        for value in np.unique(labels):
            parts, count = connected(labels == value)
            for part in range(1, count + 1):
                segment = parts == part
                if segment.sum() < min_area:
                    continue
                key = np.packbits(segment).tobytes()
                if key not in seen:
                    seen.add(key)
                    segments.append(torch.from_numpy(segment))
    return torch.stack(segments) if segments else torch.zeros(0, *label_maps[0].shape, dtype=torch.bool)


def hierarchical_regions(image: np.ndarray, base: np.ndarray, size_weight: float = 3.0) -> list[np.ndarray]:
    """Every region formed while greedily merging adjacent base regions (selective-search style).

    The next pair merged is the one with the smallest cost: colour distance of the means, lowered
    when one region is mostly enclosed by the other (an outline around a fill, a part inside a
    whole), plus a term that merges small regions early. Objects made of several flat parts thus
    appear as one candidate at some level.
    """
    count = int(base.max()) + 1
    masks = {i: base == i for i in range(count)}
    sizes = {i: int(m.sum()) for i, m in masks.items()}
    means = {i: image[m].mean(0) for i, m in masks.items()}
    border: dict[tuple[int, int], int] = {}
    for a, b in ((base[:, :-1], base[:, 1:]), (base[:-1, :], base[1:, :])):
        differ = a != b
        for x, y in zip(a[differ].tolist(), b[differ].tolist(), strict=True):
            key = (min(x, y), max(x, y))
            border[key] = border.get(key, 0) + 1
    total = base.size
    regions = []
    while border:
        perimeter: dict[int, int] = {}
        for (x, y), shared in border.items():
            perimeter[x] = perimeter.get(x, 0) + shared
            perimeter[y] = perimeter.get(y, 0) + shared

        costs = {}
        for (x, y), shared in border.items():
            enclosed = max(shared / perimeter[x], shared / perimeter[y])
            colour = float(np.linalg.norm(means[x] - means[y]))
            costs[(x, y)] = colour * (1 - 0.7 * enclosed) + size_weight * min(sizes[x], sizes[y]) / total
        a, b = min(costs, key=costs.get)
        new = max(masks) + 1
        masks[new] = masks.pop(a) | masks.pop(b)
        sizes[new] = sizes[a] + sizes[b]
        means[new] = (means[a] * sizes[a] + means[b] * sizes[b]) / sizes[new]
        merged: dict[tuple[int, int], int] = {}
        for (x, y), shared in border.items():
            if {x, y} == {a, b}:
                continue
            x, y = (new if x in (a, b) else x), (new if y in (a, b) else y)
            key = (min(x, y), max(x, y))
            merged[key] = merged.get(key, 0) + shared
        border = merged
        regions.append(masks[new])
    return regions


@dataclass
class ClassicalSegmenter:
    """Multi-scale Felzenszwalb and SLIC segments, plus the regions of a hierarchical merge of a fine
    Felzenszwalb over-segmentation (no model, runs anywhere)."""

    felzenszwalb_scales: tuple[float, ...] = (10, 30, 100, 300, 1000)
    slic_segments: tuple[int, ...] = (8, 16, 32)
    hierarchy_scale: float = 10
    min_area_fraction: float = 0.001
    name: str = "classical"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """image 1×3×H×W in [0, 1] → N×H×W bool segments."""
        from skimage.segmentation import felzenszwalb, slic

        array = image[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)
        height, width = array.shape[:2]
        area = (height * width) / (64 * 64)  # the scales are tuned on 64² images; larger ones merge more
        maps = [felzenszwalb(array, scale=s * area, sigma=0.3, min_size=max(4, int(4 * area))) for s in self.felzenszwalb_scales]
        maps += [slic(array, n_segments=n, compactness=c, start_label=0) for n in self.slic_segments for c in (1, 10)]
        min_area = max(1, int(self.min_area_fraction * height * width))
        flat = _unique_segments(maps, min_area)
        base = felzenszwalb(array, scale=self.hierarchy_scale * area, sigma=0.3, min_size=max(4, int(4 * area)))
        merged = [torch.from_numpy(r) for r in hierarchical_regions(array, base) if r.sum() >= min_area]
        return torch.cat([flat, torch.stack(merged)]) if merged else flat


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by greedy non-maximum suppression of (x0, y0, x1, y1) boxes, best score first."""
    order = scores.argsort(descending=True)
    keep = []
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    while len(order):
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        x0 = torch.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = torch.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = torch.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = torch.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0)
        iou = inter / (area[i] + area[rest] - inter).clamp_min(1e-9)
        order = rest[iou <= threshold]
    return torch.tensor(keep, dtype=torch.long)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) of each N×H×W mask (zeros for empty masks)."""
    boxes = torch.zeros(len(masks), 4)
    for i, mask in enumerate(masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(ys):
            boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return boxes


SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)


@dataclass
class SamSegmenter:
    """Automatic mask generation with a transformers ``SamModel`` (defaults of SAM's generator)."""

    model: torch.nn.Module
    name: str = "sam"
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_threshold: float = 0.88
    stability_threshold: float = 0.95
    stability_offset: float = 1.0
    nms_threshold: float = 0.7
    min_area_fraction: float = 0.001

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        size = self.model.config.vision_config.image_size
        height, width = image.shape[-2:]
        scale = size / max(height, width)
        resized = (round(height * scale), round(width * scale))
        pixels = F.interpolate(image.float().to(device) * 255, size=resized, mode="bilinear", antialias=True, align_corners=False)
        pixels = (pixels - torch.tensor(SAM_MEAN, device=device).view(1, 3, 1, 1)) / torch.tensor(SAM_STD, device=device).view(1, 3, 1, 1)
        pixels = F.pad(pixels, (0, size - resized[1], 0, size - resized[0]))
        embeddings = self.model.get_image_embeddings(pixels.to(next(self.model.parameters()).dtype))
        embeddings = embeddings if torch.is_tensor(embeddings) else embeddings.image_embeddings
        n = self.points_per_side
        grid = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        points = torch.stack(torch.meshgrid(grid * resized[1], grid * resized[0], indexing="xy"), -1).view(-1, 2)
        masks, scores = [], []
        for batch in points.split(self.points_per_batch):
            out = self.model(image_embeddings=embeddings, input_points=batch.view(1, -1, 1, 2).to(device), multimask_output=True)
            logits = out.pred_masks[0].flatten(0, 1).float()  # (P·3, h, w)
            logits = F.interpolate(logits.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
            logits = logits[..., : resized[0], : resized[1]]
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
            iou = out.iou_scores[0].flatten().float()
            high, low = logits > self.stability_offset, logits > -self.stability_offset
            stability = high.flatten(1).sum(1).float() / low.flatten(1).sum(1).float().clamp_min(1)
            keep = (iou >= self.pred_iou_threshold) & (stability >= self.stability_threshold)
            keep &= (logits > 0).flatten(1).sum(1) >= max(1, int(self.min_area_fraction * height * width))
            masks.append((logits[keep] > 0).cpu())
            scores.append(iou[keep].cpu())
        masks, scores = torch.cat(masks), torch.cat(scores)
        if len(masks) == 0:
            return torch.zeros(0, height, width, dtype=torch.bool)
        return masks[box_nms(mask_boxes(masks), scores, self.nms_threshold)]


def load_segment_everything(spec: str = "classical", device=None, allow_pickle: bool = False):
    """``classical``, or ``sam:<model>`` (a hub id, folder or tiny/sam)."""
    if spec == "classical":
        return ClassicalSegmenter()
    if spec.startswith("sam:"):
        from transformers import SamModel

        from regionedit.models.loading import load_transformers

        model, _ = load_transformers(spec[4:], SamModel, device, allow_pickle=allow_pickle, tokenizer=False)
        return SamSegmenter(model, name=spec)
    raise RegionEditError(f"unknown segment-everything provider {spec!r} (use 'classical' or 'sam:<model>')")
