"""The embedded toy-world models, one name for their three parts (kept for existing imports):

- :mod:`~regionedit.toyworld.architectures`: the toy tokenizer, CLIP and CLIPSeg configurations,
  the faces UNet and its schedule;
- :mod:`~regionedit.toyworld.streams`: the training streams (CPU half in workers, device half in
  the trainer) and the refreshing pool;
- :mod:`~regionedit.toyworld.training`: the budget, the trainer, the diffusion loss and the runs.

``scenes-vae``, ``scenes-t2i``, ``scenes-instruct`` and ``scenes-instruct-remove`` (a toy SD,
InstructPix2Pix and MagicBrush) are the latent models of :mod:`regionedit.toyworld.latent`.
"""

from __future__ import annotations

from regionedit.toyworld.architectures import (
    TEXT_LENGTH,
    TEXT_WIDTH,
    clip_config,
    clipseg_config,
    faces_unet,
    schedule,
    toy_tokenizer,
    vocabulary,
)
from regionedit.toyworld.streams import (
    ClipStream,
    DiffusionBatch,
    FaceStream,
    Pool,
    SegmentStream,
    Stream,
    TextEncoding,
    batches,
    drop,
    object_phrases,
    phrase_masks,
    render_scene_images,
    token_ids,
)
from regionedit.toyworld.training import (
    Budget,
    Speed,
    Trainer,
    diffusion_loss,
    train_clip,
    train_clipseg,
    train_diffusion,
)

__all__ = [
    "TEXT_LENGTH", "TEXT_WIDTH", "clip_config", "clipseg_config", "faces_unet", "schedule", "toy_tokenizer",
    "vocabulary", "ClipStream", "DiffusionBatch", "FaceStream", "Pool", "SegmentStream", "Stream", "TextEncoding",
    "batches", "drop", "object_phrases", "phrase_masks", "render_scene_images", "token_ids", "Budget", "Speed",
    "Trainer", "diffusion_loss", "train_clip", "train_clipseg", "train_diffusion",
]
