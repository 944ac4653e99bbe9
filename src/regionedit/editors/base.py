"""What every editor shares: one model and the companions of its method, chosen once.

An editor is built by ``from_pretrained(name_or_folder)`` (no name: the embedded toy model of its
task, :mod:`regionedit.models.defaults`), called with keyword arguments whose defaults are the
method's (the constants of :mod:`regionedit.methods`), and returns an :class:`EditorOutput`.
Conventions shared by every editor:

- images are PIL images or 1×3×H×W tensors in [0, 1] (:mod:`regionedit.images`);
- ``max_side=None`` means the model's native resolution: larger images are downscaled first;
- ``generator`` is a seed (int) or a ``torch.Generator``, which gives one seed per call (so two
  calls with one generator differ); the recipe records the seed, and ``generator=recipe["seed"]``
  repeats the edit. The methods draw their noise on CPU generators: results do not depend on the
  device's random number generator;
- a mask is a tensor, a mask source or a spec string (:mod:`regionedit.mask_sources`); a ``text:``
  source gets the model family's segmenter and an ``attention:`` source its instruct model, loaded
  on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from PIL import Image

from regionedit import checks
from regionedit.errors import RegionEditError
from regionedit.models.backend import DiffusionModel


@dataclass
class EditorOutput:
    """The result of an edit."""

    image: Image.Image  # the edited image, at the input's (possibly downscaled) size
    pixels: torch.Tensor  # 1×3×H×W in [0, 1]: the same before 8-bit rounding
    recipe: dict  # the method, the model and every setting used (written into saved PNGs)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # name → 1×1×H×W in [0, 1], 1 = edited
    images: dict[str, Image.Image] = field(default_factory=dict)  # further pictures (ZONE's layer, …)
    details: Any = None  # the method's own output (latent samples, timings, …)


def seed_from(generator: torch.Generator | int | None) -> int:
    """The seed of one call: an int as it is (None: 0, the methods' default), or one draw from a
    ``torch.Generator``."""
    if generator is None:
        return 0
    if isinstance(generator, torch.Generator):
        draw = torch.randint(0, checks.MAX_SEED, (1,), generator=generator, device=generator.device)
        return int(draw.item())
    return checks.seed(generator, "generator")


class Editor:
    """A diffusion model and the companions its method needs (subclasses add their own)."""

    task: ClassVar[str]  # its row of regionedit.models.defaults
    method: ClassVar[str]  # the method's name in messages

    def __init__(self, model: DiffusionModel, allow_pickle: bool = False):
        self.model = model
        self.allow_pickle = allow_pickle  # for the companions loaded later
        self.progress = True
        self._loaded: dict[str, Any] = {}

    @classmethod
    def from_pretrained(cls, name_or_folder: str | None = None, *, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, allow_pickle: bool = False, **companions) -> Editor:
        """Load the model (a hub id, a diffusers folder, ``toy/…`` or ``tiny/…``; None: the embedded
        default of the method) onto ``device`` (default: the GPU if there is one); ``companions``:
        the editor's own (RDM's ``segmenter`` and ``clip``, ZONE's ``second_model``, …), by default
        those of the model's family."""
        model = load(default_name(name_or_folder, cls.task), device, dtype, allow_pickle)
        return cls(model, allow_pickle=allow_pickle, **companions)

    def set_progress_bar_config(self, disable: bool = False) -> None:
        """``disable=True``: no progress bars."""
        self.progress = not disable

    def max_side(self, max_side: int | None) -> int:
        """None → the model's native resolution."""
        return self.model.native_resolution if max_side is None else max_side

    # ------------------------------------------------------------------------- companions
    def companion(self, name: str, build) -> Any:
        """``build()`` once per name, on first use."""
        if name not in self._loaded:
            self._loaded[name] = build()
        return self._loaded[name]

    def loaded(self, value, loader) -> Any:
        """A companion given by name, loaded with ``loader(name, device, allow_pickle)`` on first use;
        one given loaded, as it is."""
        if not isinstance(value, str):
            return value
        return self.companion(value, lambda: loader(value, self.model.device, self.allow_pickle))

    def companion_model(self, name: str) -> DiffusionModel:
        """Another diffusion model on this editor's device and dtype (this one if the name is its own)."""
        if name == self.model.name:
            return self.model
        return self.companion(name, lambda: load(name, self.model.device, self.model.dtype, self.allow_pickle))

    def text_segmenter(self):
        """The text-prompted segmenter of the model's family (for ``text:`` masks)."""
        from regionedit.segment import companions, load_segmenter

        return self.loaded(companions(self.model.name)[0], load_segmenter)

    def mask_source(self, mask, seed: int = 0, name: str = "mask"):
        """A mask as the method takes it: tensors as they are; sources and specs with the companion
        model they need (a segmenter for ``text:``, the family's instruct model for ``attention:``,
        which samples with ``seed``). ``name``: the mask's name in messages (a front end's flag)."""
        from regionedit.mask_sources import AttentionMask, TextMask, as_source, instruct_companion

        if mask is None or torch.is_tensor(mask):
            return mask
        source = as_source(mask)
        if isinstance(source, TextMask) and source.segmenter is None:
            return replace(source, segmenter=self.text_segmenter())
        if isinstance(source, AttentionMask) and source.model is None:
            instruct = instruct_companion(self.model)
            if instruct is None:
                raise RegionEditError(f"{name} {source.describe()!r}: an attention mask needs an instruct model, and "
                                      f"{self.method}'s model {self.model.name} ({self.model.conditioning}) has none to go "
                                      "with it: use another mask source")
            return replace(source, model=self.companion_model(instruct), seed=seed)
        return source


def default_name(name_or_folder: str | None, task: str) -> str:
    from regionedit.models.defaults import default_model

    return name_or_folder or default_model(task)


def load(name: str, device=None, dtype=None, allow_pickle: bool = False) -> DiffusionModel:
    from regionedit.models import load_model

    return load_model(name, device=device, dtype=dtype, allow_pickle=allow_pickle)


def auto(value, default):
    """A companion argument: ``"auto"`` → ``default``; None or ``"none"`` → None; else the value."""
    if isinstance(value, str) and value == "auto":
        return default
    return None if value is None or (isinstance(value, str) and value == "none") else value
