"""RBE: unsupervised region-based editing (Li et al., AAAI 2025).

Algorithm, at one timestep t (the code: t = 500 after 40-step DDIM inversion):
1. f_M(h) = M ⊙ ε̂(x_t, t; h) and f_C(h) = (1 − M) ⊙ ε̂(x_t, t; h) for a mask M of the region.
2. The top-k right singular vectors of J_M = ∂f_M/∂h, by subspace iteration on J_Mᵀ J_M with
   JVPs and VJPs only, each vector deflated against the earlier ones (the released code is not).
3. Confinement: project each onto the orthogonal complement of the top-r right singular subspace
   of J_C (the released code removes only r = 1; default here 8), then renormalise.
4. Edit: h ← h + γu at every sampling step from t down to 0 (code: γ = ±30, DDIM η = 0.5).
"""

from __future__ import annotations

import time

import torch

from regionedit import checks, defaults
from regionedit.core.jacobian import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_TOLERANCE,
    project_out,
    top_singular,
)
from regionedit.errors import RegionEditError
from regionedit.mask_sources import resolve_source
from regionedit.masks import check_region
from regionedit.methods.directions import Directions
from regionedit.methods.hspace_edit import DEFAULT_JVP, EditStart, jacobian, sample_mask
from regionedit.models.backend import DiffusionModel

DEFAULT_K = defaults.RBE_K
DEFAULT_COMPLEMENT_RANK = defaults.RBE_COMPLEMENT_RANK
DEFAULT_STRENGTH = defaults.RBE_STRENGTH  # γ of the RBE code (±30); JICA's sliders use it too
DEFAULT_STRIP = defaults.RBE_STRIP  # γ values of a slider strip


def discover(
    model: DiffusionModel,
    start: EditStart,
    mask,
    k: int = DEFAULT_K,
    complement_rank: int = DEFAULT_COMPLEMENT_RANK,
    space: str = "h",
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance: float = DEFAULT_TOLERANCE,
    jvp: str = DEFAULT_JVP,
    region_name: str | None = None,
    seed: int = 0,
    image=None,
) -> Directions:
    """The region's top-k directions, confined by projection away from the complement's top-r.

    ``mask``: a tensor at the input's size, or any mask source (:mod:`regionedit.mask_sources`),
    resolved on ``image`` (the input ``start`` was made from; needed by text, attention and segment
    sources). ``region_name`` defaults to the source's description."""
    began = time.perf_counter()
    given = resolve_source(mask, image, model, "RBE", size=input_size(model, start))
    region_name = region_name or (given.source if not torch.is_tensor(mask) else "mask")
    region = sample_mask(model, start, given.mask)
    check_region(region, region_name, needs_complement=True)
    check_rank("k", k, region, model.channels)
    check_rank("complement rank r", complement_rank, 1 - region, model.channels)
    j_region = jacobian(model, start, region, space, jvp)
    j_complement = jacobian(model, start, 1 - region, space, jvp)
    generator = torch.Generator().manual_seed(checks.seed(seed))
    options = dict(max_iterations=max_iterations, tolerance=tolerance, generator=generator)
    found = top_singular(j_region, k, **options)
    complement = top_singular(j_complement, complement_rank, **options)
    confined = project_out(found.vectors, complement.vectors)
    confined = confined / confined.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (confined.dim() - 1))
    before = j_complement.norms(found.vectors) / j_region.norms(found.vectors)
    after = j_complement.norms(confined) / j_region.norms(confined)
    return Directions(
        vectors=confined.cpu(), singular_values=found.singular_values.cpu(),
        labels=[f"{region_name} {i}" for i in range(k)], method="rbe", space=space, model=model.name,
        timestep=start.timestep, num_inference_steps=len(start.schedule), regions=[region_name],
        ranks={"k": k, "complement_rank": complement_rank},
        report={
            "leak_before": [round(float(v), 5) for v in before],  # ‖J_C u‖ / ‖J_M u‖ of the raw directions
            "leak_after": [round(float(v), 5) for v in after],  # … of the confined directions
            "complement_singular_values": [round(float(v), 6) for v in complement.singular_values],
            "iterations": [found.iterations, complement.iterations],
            "converged": [found.converged, complement.converged],
            "seconds": round(time.perf_counter() - began, 3),
        },
    )


def input_size(model: DiffusionModel, start: EditStart) -> tuple[int, int]:
    """(width, height) of the input ``start`` was made from (a generated start: its decoded size)."""
    if start.fit is not None:
        return start.fit.original_size
    return start.x_t.shape[-1] * model.vae_scale_factor, start.x_t.shape[-2] * model.vae_scale_factor


def check_rank(name: str, rank: int, region: torch.Tensor, channels: int) -> None:
    """A masked Jacobian has at most channels × (pixels in the region) non-zero singular values."""
    outputs = int(region.sum().item()) * channels
    if rank < 1:
        raise RegionEditError(f"{name} must be ≥ 1, got {rank}")
    if rank > outputs:
        raise RegionEditError(f"{name} = {rank} is larger than possible: the region gives only {outputs} outputs")
