"""Masks from text: a text-prompted segmenter (CLIPSeg) locates "the horse" in an image.

RDM's recipe: sigmoid of the segmenter's logits, scaled to 0..255, thresholded at K (the paper's
K = 150; its code used 100), optionally dilated. Real use: CIDAS/clipseg-rd64-refined; offline:
the embedded toy-world segmenter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from regionedit import defaults
from regionedit.errors import NothingLocated, RegionEditError
from regionedit.masks import dilate
from regionedit.metrics import clip_pixels

DEFAULT_THRESHOLD = defaults.RDM_THRESHOLD
COMPANIONS = {  # the default segmenter and CLIP for a family of diffusion models
    "tiny/": ("tiny/clipseg", "tiny/clip"),
    "toy/": ("toy/scenes-clipseg", "toy/scenes-clip"),
    "": ("CIDAS/clipseg-rd64-refined", "openai/clip-vit-base-patch16"),
}


def companions(model_name: str) -> tuple[str, str]:
    """(segmenter, CLIP) that go with a diffusion model by default."""
    return next(names for prefix, names in COMPANIONS.items() if model_name.startswith(prefix))


@dataclass
class TextMask:
    mask: torch.Tensor  # 1×1×H×W in {0, 1}
    scores: torch.Tensor  # 1×1×H×W, sigmoid × 255
    text: str
    threshold: float


class TextSegmenter:
    """CLIPSeg over transformers: (image, text) → a score per pixel."""

    def __init__(self, model, tokenizer, name: str = "segmenter"):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.device = next(model.parameters()).device
        self.size = model.config.vision_config.image_size

    @torch.no_grad()
    def scores(self, image: torch.Tensor, text: str) -> torch.Tensor:
        """1×1×H×W sigmoid scores × 255 at the image's size (image 1×3×H×W in [0, 1])."""
        pixels = clip_pixels(image.float().to(self.device), self.size)
        tokens = self.tokenizer([text], padding="max_length", truncation=True,
                                max_length=self.model.config.text_config.max_position_embeddings, return_tensors="pt")
        logits = self.model(input_ids=tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device),
                            pixel_values=pixels.to(next(self.model.parameters()).dtype)).logits.float()
        logits = logits.view(1, 1, *logits.shape[-2:])
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(logits) * 255

    def locate(self, image: torch.Tensor, text: str, threshold: float = DEFAULT_THRESHOLD, dilation: int = 0) -> TextMask:
        """The pixels whose score reaches ``threshold`` (0..255), grown by ``dilation`` pixels."""
        if not text or not text.strip():
            raise RegionEditError("the positioning text is empty: say what to edit (e.g. 'the ball') or give a mask")
        if not 0 < threshold < 255:
            raise RegionEditError(f"threshold must be in (0, 255), got {threshold}")
        scores = self.scores(image, text)
        mask = (scores >= threshold).float()
        if mask.sum() == 0:
            raise NothingLocated(
                f"positioning text {text!r} matched nothing (best score {scores.max().item():.0f}/255 < threshold "
                f"{threshold:g}): lower the threshold or give a mask (CLI: --threshold, --mask / --box)"
            )
        return TextMask(dilate(mask, dilation), scores.cpu(), text, threshold)


def load_segmenter(name: str, device=None, allow_pickle: bool = False) -> TextSegmenter:
    from transformers import CLIPSegForImageSegmentation

    from regionedit.models.loading import load_transformers

    model, tokenizer = load_transformers(name, CLIPSegForImageSegmentation, device, allow_pickle=allow_pickle)
    return TextSegmenter(model, tokenizer, name)


def load_clip(name: str, device=None, allow_pickle: bool = False):
    """A :class:`regionedit.metrics.ClipScorer` over a CLIP model (hub id, folder, toy/… or tiny/clip)."""
    from transformers import CLIPModel

    from regionedit.metrics import ClipScorer
    from regionedit.models.loading import load_transformers

    model, tokenizer = load_transformers(name, CLIPModel, device, allow_pickle=allow_pickle)
    scorer = ClipScorer(model, tokenizer)
    scorer.name = name
    return scorer
