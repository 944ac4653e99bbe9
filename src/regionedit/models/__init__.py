"""Model loading and the diffusion backend."""

from regionedit.models.backend import (
    Denoiser,
    DiffusionModel,
    ImageFit,
    default_device,
    default_dtype,
)
from regionedit.models.loading import embedded_models, load_model, resolve

__all__ = [
    "DiffusionModel",
    "Denoiser",
    "ImageFit",
    "default_device",
    "default_dtype",
    "embedded_models",
    "load_model",
    "resolve",
]
