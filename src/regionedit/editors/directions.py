"""Local edit directions in h-space: RBE (one region) and JICA (joint and individual directions).

1. :meth:`invert`: the image → x_t at one timestep (the RBE code: 40-step DDIM inversion to
   t = 500; or the edit-friendly inversion, whose noise maps make γ = 0 an exact reconstruction).
2. ``discover``: the top right singular vectors of the region Jacobians at x_t (RBE: confined away
   from the rest of the image; JICA: JIVE on several regions) → a
   :class:`~regionedit.methods.directions.Directions` (save it, apply it to other images).
3. :meth:`apply`: h ← h + γu at every step from t down to 0; :meth:`strip`: a slider of γ values.
Directions are applied only with the model and at the sample size they were found with.
The algorithms are :mod:`regionedit.methods.rbe`, :mod:`~regionedit.methods.jica` and
:mod:`~regionedit.methods.hspace_edit`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from regionedit import __version__
from regionedit.editors.base import Editor, EditorOutput, seed_from
from regionedit.errors import RegionEditError
from regionedit.images import unit_to_pil
from regionedit.methods import jica, rbe
from regionedit.methods.directions import Directions
from regionedit.methods.hspace_edit import (
    DEFAULT_ETA,
    DEFAULT_STEPS,
    DEFAULT_TIMESTEP,
    EditStart,
    h_shape,
    sample_with_direction,
    start_from_image,
    to_pixels,
)

SEARCH_OPTIONS = ("space", "max_iterations", "tolerance", "jvp")  # of the subspace iteration


class DirectionsEditor(Editor):
    """What RBE and JICA share: the image at timestep t, and applying directions there."""

    def invert(
        self,
        image,
        *,
        timestep: int = DEFAULT_TIMESTEP,
        num_inference_steps: int = DEFAULT_STEPS,
        inversion: str = "ddim",
        prompt: str | None = None,
        generator: torch.Generator | int | None = None,
        max_side: int | None = None,
    ) -> EditStart:
        """``image`` at ``timestep`` of a ``num_inference_steps`` schedule, by DDIM inversion
        (``"ddim"``) or the edit-friendly inversion (``"ddpm"``); ``prompt`` for text models."""
        return start_from_image(self.model, image, timestep=timestep, num_inference_steps=num_inference_steps,
                                inversion=inversion, prompt=prompt, seed=seed_from(generator),
                                max_side=self.max_side(max_side))

    def apply(
        self,
        image,
        directions: Directions,
        index: int = 0,
        strength: float = rbe.DEFAULT_STRENGTH,
        *,
        eta: float = DEFAULT_ETA,
        asymmetric: bool = False,
        inversion: str = "ddim",
        prompt: str | None = None,
        generator: torch.Generator | int | None = None,
        max_side: int | None = None,
    ) -> EditorOutput:
        """Edit ``image`` (or its :meth:`invert` result) along direction ``index`` with h ← h + γu
        (``strength`` γ), sampling with η = ``eta`` (0: deterministic DDIM); ``asymmetric``: Asyrp's step."""
        seed = seed_from(generator)
        start = self.start_for(image, directions, inversion, prompt, seed, max_side)
        sample = sample_with_direction(self.model, start, directions.vector(index), strength, directions.space, eta=eta,
                                       asymmetric=asymmetric, seed=seed)
        pixels = to_pixels(self.model, start, sample)
        recipe = {"method": directions.method, "version": __version__, "model": self.model.name, "index": index,
                  "label": directions.labels[index], "strength": strength, "timestep": directions.timestep,
                  "num_inference_steps": directions.num_inference_steps, "space": directions.space, "eta": eta,
                  "asymmetric": asymmetric, "inversion": "ddim" if start.noise_maps is None else "ddpm",
                  "prompt": start.prompt, "seed": seed}
        return EditorOutput(unit_to_pil(pixels[0]), pixels, recipe, details=sample)

    def strip(self, image, directions: Directions, index: int = 0, strengths: Sequence[float] = rbe.DEFAULT_STRIP, *,
              generator: torch.Generator | int | None = None, **options) -> EditorOutput:
        """A slider: the edits at each γ of ``strengths`` (one seed for all), side by side
        (``options``: :meth:`apply`'s)."""
        if not strengths:
            raise RegionEditError("a strip needs at least one strength")
        seed = seed_from(generator)
        start = self.start_for(image, directions, options.pop("inversion", "ddim"), options.pop("prompt", None), seed,
                               options.pop("max_side", None))
        frames = [self.apply(start, directions, index, strength, generator=seed, **options) for strength in strengths]
        width, height = frames[0].image.size
        strip = Image.new("RGB", (width * len(frames), height))
        for i, frame in enumerate(frames):
            strip.paste(frame.image, (i * width, 0))
        recipe = {**frames[0].recipe, "strengths": list(strengths)}
        del recipe["strength"]
        return EditorOutput(strip, torch.cat([f.pixels for f in frames], dim=-1), recipe, details=frames)

    def start_for(self, image, directions: Directions, inversion: str, prompt: str | None, seed: int,
                  max_side: int | None) -> EditStart:
        """The image at the directions' timestep (an :class:`EditStart` is checked instead), refusing
        directions found with another model, at another size or by another method."""
        if directions.method != self.method.lower():
            raise RegionEditError(f"these are {directions.method.upper()} directions; use the {directions.method.upper()} editor")
        directions.check_model(self.model.name)
        if isinstance(image, EditStart):
            start = image
            if start.timestep != directions.timestep or len(start.schedule) != directions.num_inference_steps:
                raise RegionEditError(
                    f"the directions were found at timestep {directions.timestep} of {directions.num_inference_steps} "
                    f"steps, this start is at {start.timestep} of {len(start.schedule)}")
        else:
            start = self.invert(image, timestep=directions.timestep, num_inference_steps=directions.num_inference_steps,
                                inversion=inversion, prompt=prompt, generator=seed, max_side=max_side)
        shape = h_shape(self.model, start) if directions.space == "h" else tuple(start.x_t.shape[1:])
        directions.check_compatible(self.model.name, shape)
        return start

    def _discover(self, find, image, regions, generator, options: dict, **method_options) -> Directions:
        """``find`` (rbe.discover or jica.discover) on the image's start, with its search ``options``
        (space, max_iterations, tolerance, jvp; the methods' defaults) and :meth:`invert`'s."""
        seed = seed_from(generator)
        search = {name: options.pop(name) for name in SEARCH_OPTIONS if name in options}
        if isinstance(image, EditStart):
            start, source = image, None  # masks that need the pixels then need the image instead
        else:
            start, source = self.invert(image, generator=seed, **options), image
        regions = [self.mask_source(r, seed) for r in regions] if isinstance(regions, list) else self.mask_source(regions, seed)
        return find(self.model, start, regions, seed=seed, image=source, **search, **method_options)


class RBEEditor(DirectionsEditor):
    """RBE: unsupervised region-based editing (Li et al., AAAI 2025)."""

    task = "rbe"
    method = "RBE"

    def discover(self, image, mask, *, k: int = rbe.DEFAULT_K, complement_rank: int = rbe.DEFAULT_COMPLEMENT_RANK,
                 region_name: str | None = None, generator: torch.Generator | int | None = None, **options) -> Directions:
        """The region's top-``k`` directions, confined away from the top-``complement_rank`` of the
        rest. ``image``: an image or its :meth:`invert` result; ``options``: the search's (``space``,
        ``max_iterations``, ``tolerance``, ``jvp``) and :meth:`invert`'s."""
        return self._discover(rbe.discover, image, mask, generator, options, k=k, complement_rank=complement_rank,
                              region_name=region_name)


class JICAEditor(DirectionsEditor):
    """JICA: joint and individual component analysis of region Jacobians (Kouzelis et al., BMVC 2024)."""

    task = "jica"
    method = "JICA"

    def discover(self, image, masks: Sequence, *, region_names: Sequence[str] | None = None,
                 svd_rank: int = jica.DEFAULT_SVD_RANK, joint_rank: int = jica.DEFAULT_JOINT_RANK,
                 individual_rank: int = jica.DEFAULT_INDIVIDUAL_RANK, generator: torch.Generator | int | None = None,
                 **options) -> Directions:
        """Joint directions of all ``masks`` (edit them together), then each region's individual
        ones. ``image`` and ``options``: as :meth:`RBEEditor.discover`'s."""
        return self._discover(jica.discover, image, list(masks), generator, options, region_names=region_names,
                              svd_rank=svd_rank, joint_rank=joint_rank, individual_rank=individual_rank)
