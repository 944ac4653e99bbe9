"""Image-editing metrics over whole images and inside / outside a mask.

Conventions: images are float tensors in [0, 1], B×3×H×W (or 3×H×W); masks are B×1×H×W (or
H×W) with 1 = the edited region. ``region`` is "all", "inside" or "outside" the mask.

- L1, L2 (MSE) and PSNR in a region average over that region's pixels only, so the other region
  is ignored exactly. PSNR of identical images is capped at 100 dB (JSON has no infinity).
- SSIM uses an 11×11 Gaussian window (σ 1.5) like scikit-image (``gaussian_weights=True``); the
  whole-image value matches ``skimage.metrics.structural_similarity``. In a region, both images are
  zeroed outside it (as PIE-Bench does) and the SSIM map is averaged over the region's pixels.
- CLIP-I / CLIP-T are cosine similarities of any transformers ``CLIPModel``'s embeddings (our own
  code: torchmetrics' CLIPScore breaks on transformers 5); no ×100 scaling.
- Structure distance is PIE-Bench's (after Tumanyan et al., "Splicing ViT Features", 2022): the
  mean squared difference between the two images' self-similarity matrices (cosine) of the keys of
  a ViT's last layer, over all tokens; reported ×10³ as PIE-Bench does. PIE-Bench uses DINO
  ViT-B/8; any ViT with a last key projection serves here (the toy world uses its CLIP image tower).
- LPIPS needs the optional ``lpips`` extra and its backbone weights already on disk; it never
  downloads anything.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from regionedit.errors import RegionEditError
from regionedit.images import to_model_range

PSNR_CAP = 100.0
REGIONS = ("all", "inside", "outside")


def _images(x: torch.Tensor) -> torch.Tensor:
    x = x.unsqueeze(0) if x.dim() == 3 else x
    if x.dim() != 4:
        raise RegionEditError(f"images must be B×C×H×W or C×H×W, got shape {tuple(x.shape)}")
    return x.float()


def region_weights(mask: torch.Tensor | None, region: str, like: torch.Tensor) -> torch.Tensor:
    """B×1×H×W weights (0/1) of the pixels in ``region``."""
    if region not in REGIONS:
        raise RegionEditError(f"region must be one of {REGIONS}, got {region!r}")
    if region == "all":
        return torch.ones(like.shape[0], 1, *like.shape[-2:], device=like.device)
    if mask is None:
        raise RegionEditError(f"region {region!r} needs a mask")
    mask = mask.float().to(like.device)
    mask = mask.view(1, 1, *mask.shape) if mask.dim() == 2 else mask.unsqueeze(1) if mask.dim() == 3 else mask
    if mask.shape[-2:] != like.shape[-2:]:
        raise RegionEditError(f"mask size {tuple(mask.shape[-2:])} differs from image size {tuple(like.shape[-2:])}")
    mask = (mask > 0.5).float().expand(like.shape[0], 1, -1, -1)
    return mask if region == "inside" else 1 - mask


def _region_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of B×C×H×W values over the weighted pixels (all channels); NaN for an empty region."""
    total = (values * weights).sum(dim=(1, 2, 3))
    count = weights.sum(dim=(1, 2, 3)) * values.shape[1]
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def l1(a, b, mask=None, region: str = "all") -> torch.Tensor:
    a, b = _images(a), _images(b)
    return _region_mean((a - b).abs(), region_weights(mask, region, a))


def l2(a, b, mask=None, region: str = "all") -> torch.Tensor:
    """Mean squared error."""
    a, b = _images(a), _images(b)
    return _region_mean((a - b) ** 2, region_weights(mask, region, a))


def psnr(a, b, mask=None, region: str = "all", data_range: float = 1.0) -> torch.Tensor:
    mse = l2(a, b, mask, region)
    value = 10 * torch.log10(data_range**2 / mse.clamp_min(1e-30))
    return torch.where(mse > 0, value.clamp_max(PSNR_CAP), torch.where(mse == 0, PSNR_CAP, value))


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter with reflect padding (scipy.ndimage's default 'reflect' mode)."""
    r = (window.numel() - 1) // 2
    c = x.shape[1]
    w = window.to(x.dtype).to(x.device)
    x = F.conv2d(_pad_symmetric(x, r, horizontal=True), w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(_pad_symmetric(x, r, horizontal=False), w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _pad_symmetric(x: torch.Tensor, r: int, horizontal: bool) -> torch.Tensor:
    """scipy's 'reflect' (edge sample repeated: d c b a | a b c d) along one axis."""
    dim = -1 if horizontal else -2
    head = x.narrow(dim, 0, r).flip(dim)
    tail = x.narrow(dim, x.shape[dim] - r, r).flip(dim)
    return torch.cat([head, x, tail], dim=dim)


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM, B×C×H×W (Wang et al. 2004; Gaussian window, population covariances)."""
    a, b = _images(a).double(), _images(b).double()
    window = _gaussian_window()
    mu_a, mu_b = _blur(a, window), _blur(b, window)
    var_a = _blur(a * a, window) - mu_a**2
    var_b = _blur(b * b, window) - mu_b**2
    cov = _blur(a * b, window) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(a, b, mask=None, region: str = "all", data_range: float = 1.0) -> torch.Tensor:
    a, b = _images(a), _images(b)
    if region == "all":
        values = ssim_map(a, b, data_range)
        pad = (_gaussian_window().numel() - 1) // 2
        return values[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3)).float()
    weights = region_weights(mask, region, a)
    values = ssim_map(a * weights, b * weights, data_range)
    return _region_mean(values, weights.double()).float()


def mask_iou(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of binary masks (> 0.5), per image; 1 when both are empty."""
    p = (prediction.float() > 0.5).flatten(1) if prediction.dim() > 2 else (prediction.float() > 0.5).flatten().unsqueeze(0)
    t = (target.float() > 0.5).flatten(1) if target.dim() > 2 else (target.float() > 0.5).flatten().unsqueeze(0)
    if p.shape != t.shape:
        raise RegionEditError(f"mask shapes differ: {tuple(prediction.shape)} vs {tuple(target.shape)}")
    inter, union = (p & t).sum(1).float(), (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def summary(a, b, mask=None) -> dict[str, float]:
    """Mean of every pixel metric over a batch, whole image and both regions (when a mask is given)."""
    out = {}
    regions = REGIONS if mask is not None else ("all",)
    for region in regions:
        for name, fn in (("l1", l1), ("l2", l2), ("psnr", psnr), ("ssim", ssim)):
            values = fn(a, b, mask, region)
            out[f"{name}_{region}"] = float(values[~values.isnan()].mean()) if (~values.isnan()).any() else math.nan
    return out


# ---------------------------------------------------------------------------------- CLIP
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images in [0, 1] → CLIP's input: resized to size×size (bicubic, antialiased), normalised."""
    images = F.interpolate(_images(images), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.clamp(0, 1) - mean) / std


def pooled(output) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """CLIP-I and CLIP-T over any transformers ``CLIPModel`` and its tokenizer."""

    def __init__(self, model, tokenizer, device: torch.device | str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.image_size = model.config.vision_config.image_size

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_features(images)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings, differentiable with respect to the images (for guidance)."""
        pixels = clip_pixels(_images(images).to(self.device), self.image_size)
        dtype = next(self.model.parameters()).dtype
        features = pooled(self.model.get_image_features(pixel_values=pixels.to(dtype)))
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True,
                                max_length=self.model.config.text_config.max_position_embeddings, return_tensors="pt")
        features = pooled(self.model.get_text_features(input_ids=tokens.input_ids.to(self.device),
                                                        attention_mask=tokens.attention_mask.to(self.device)))
        return F.normalize(features.float(), dim=-1)

    def clip_i(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of the image embeddings of a and b, per pair."""
        return (self.image_embeddings(a) * self.image_embeddings(b)).sum(-1)

    def clip_t(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Cosine similarity of each image with its text."""
        if len(texts) != _images(images).shape[0]:
            raise RegionEditError(f"clip_t needs one text per image: {len(texts)} texts, {_images(images).shape[0]} images")
        return (self.image_embeddings(images) * self.text_embeddings(texts)).sum(-1)


# ----------------------------------------------------------------------- structure distance
STRUCTURE_SCALE = 1e3  # PIE-Bench reports structure distance ×10³


def _last_key_projection(vision_model: torch.nn.Module) -> torch.nn.Module:
    """The key projection of a ViT's last layer (CLIP: ``k_proj``; ViT / DINO: ``key``)."""
    keys = [m for name, m in vision_model.named_modules() if name.rsplit(".", 1)[-1] in ("k_proj", "key")]
    if not keys:
        raise RegionEditError(f"{type(vision_model).__name__} has no attention key projection (k_proj / key): not a ViT")
    return keys[-1]


def key_self_similarity(vision_model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """B×N×N cosine self-similarity of the last layer's keys over all N tokens of ``pixels``
    (already in the model's input normalisation)."""
    captured = []
    handle = _last_key_projection(vision_model).register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        vision_model(pixel_values=pixels)
    finally:
        handle.remove()
    keys = F.normalize(captured[-1].float(), dim=-1)
    return keys @ keys.transpose(1, 2)


@torch.no_grad()
def structure_distance(vision_model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, image_size: int | None = None,
                       batch_size: int = 32) -> torch.Tensor:
    """PIE-Bench's structure distance (×10³) of each pair of images in [0, 1], through any ViT with
    CLIP's input normalisation (``image_size``: the model's, read from its config if not given)."""
    a, b = _images(a), _images(b)
    if a.shape != b.shape:
        raise RegionEditError(f"structure_distance needs images of one shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    size = image_size or vision_model.config.image_size
    device = next(vision_model.parameters()).device
    values = []
    for i in range(0, a.shape[0], batch_size):
        pair = torch.cat([a[i : i + batch_size], b[i : i + batch_size]]).to(device)
        similarity = key_self_similarity(vision_model, clip_pixels(pair, size))
        first, second = similarity.chunk(2)
        values.append(((first - second) ** 2).mean(dim=(1, 2)).cpu() * STRUCTURE_SCALE)
    return torch.cat(values)


# --------------------------------------------------------------------------------- LPIPS
LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def lpips_available(net: str = "alex") -> tuple[bool, str]:
    """Whether LPIPS can run without any download, and if not, why (one line)."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return False, "LPIPS needs the optional extra: pip install 'regionedit[lpips]' (it pulls torchvision)"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net]
    if not weights.exists():
        return False, f"LPIPS backbone weights are not on disk ({weights}); copy them there (regionedit never downloads)"
    return True, ""


_LPIPS_CACHE: dict = {}


def lpips_distance(a: torch.Tensor, b: torch.Tensor, net: str = "alex", differentiable: bool = False) -> torch.Tensor:
    """LPIPS distance per image pair (lower is more similar)."""
    if net not in LPIPS_BACKBONES:
        raise RegionEditError(f"LPIPS net must be one of {', '.join(LPIPS_BACKBONES)}, got {net!r}")
    available, why = lpips_available(net)
    if not available:
        raise RegionEditError(why)
    import lpips

    if net not in _LPIPS_CACHE:
        _LPIPS_CACHE[net] = lpips.LPIPS(net=net, verbose=False).eval()
    model = _LPIPS_CACHE[net].to(a.device)
    with torch.set_grad_enabled(differentiable):
        return model(to_model_range(_images(a)), to_model_range(_images(b))).flatten()
