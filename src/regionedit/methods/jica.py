"""JICA: joint and individual component analysis of region Jacobians (Kouzelis et al., BMVC 2024).

Algorithm, at one timestep t, for regions m_1 … m_N:
1. J_i = ∂(m_i ⊙ ε̂)/∂h, approximated by its rank-p truncated SVD U_i S_i V_iᵀ (subspace
   iteration); the row space is represented by X_i = S_i V_iᵀ.
2. JIVE on the X_i: alternate
   - joint: V_C = top r_C right singular vectors of the stacked [X_i − A_i]; J_i = (X_i − A_i) V_C V_Cᵀ;
   - individual: A_i = rank-r_A approximation of (X_i − J_i)(I − V_C V_Cᵀ), with row space V_A^i;
   until the residual stops changing.
3. Directions in V_C edit globally; directions in V_A^i edit region i only. They transfer to other
   images at the same timestep; γ along one is a slider.
No public code exists; defaults here: p = 10, r_C = 2, r_A = 3.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from regionedit import checks, defaults
from regionedit.core.jacobian import DEFAULT_MAX_ITERATIONS, DEFAULT_TOLERANCE, top_singular
from regionedit.errors import RegionEditError
from regionedit.mask_sources import resolve_source
from regionedit.masks import check_region
from regionedit.methods.directions import Directions
from regionedit.methods.hspace_edit import DEFAULT_JVP, EditStart, jacobian, sample_mask
from regionedit.methods.rbe import check_rank, input_size
from regionedit.models.backend import DiffusionModel

DEFAULT_SVD_RANK = defaults.JICA_SVD_RANK
DEFAULT_JOINT_RANK = defaults.JICA_JOINT_RANK
DEFAULT_INDIVIDUAL_RANK = defaults.JICA_INDIVIDUAL_RANK


@dataclass
class JiveResult:
    joint: torch.Tensor  # (r_C, n) orthonormal rows
    individual: list[torch.Tensor]  # per block (r_A, n), orthonormal rows, orthogonal to joint
    iterations: int
    converged: bool


def _top_rows(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` approximation of ``matrix`` and its right singular vectors (rank × n)."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank], vh[:rank]


def jive(
    blocks: Sequence[torch.Tensor], joint_rank: int, individual_rank: int,
    max_iterations: int = 200, tolerance: float = 1e-9,
) -> JiveResult:
    """JIVE on blocks that share their columns (p_i × n each): joint and individual row spaces."""
    blocks = [b.double() for b in blocks]
    n = blocks[0].shape[1]
    if any(b.shape[1] != n for b in blocks):
        raise RegionEditError("JIVE blocks must have the same number of columns")
    if joint_rank < 1 or individual_rank < 1:
        raise RegionEditError(f"JIVE ranks must be ≥ 1, got joint {joint_rank}, individual {individual_rank}")
    if joint_rank > sum(len(b) for b in blocks) or any(individual_rank > len(b) for b in blocks):
        raise RegionEditError(
            f"JIVE ranks too large: joint {joint_rank} > {sum(len(b) for b in blocks)} rows in all, or individual "
            f"{individual_rank} > the rows of a block ({min(len(b) for b in blocks)})"
        )
    individual = [torch.zeros_like(b) for b in blocks]
    previous, converged, iterations = None, False, 0
    while iterations < max_iterations and not converged:
        iterations += 1
        stacked = torch.cat([b - a for b, a in zip(blocks, individual, strict=True)])
        _, joint_rows = _top_rows(stacked, joint_rank)
        joint = [_onto(b - a, joint_rows) for b, a in zip(blocks, individual, strict=True)]
        parts = [_top_rows((b - j) - _onto(b - j, joint_rows), individual_rank) for b, j in zip(blocks, joint, strict=True)]
        individual = [approx for approx, _ in parts]
        residual = sum(((b - j - a) ** 2).sum() for b, j, a in zip(blocks, joint, individual, strict=True)).item()
        converged = previous is not None and abs(previous - residual) <= tolerance * max(previous, 1e-30)
        previous = residual
    return JiveResult(joint_rows.float(), [rows.float() for _, rows in parts], iterations, converged)


def _onto(matrix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Project the rows of ``matrix`` onto span(rows) (orthonormal), without an n×n projector."""
    return (matrix @ rows.T) @ rows


def discover(
    model: DiffusionModel,
    start: EditStart,
    masks: Sequence,
    region_names: Sequence[str] | None = None,
    svd_rank: int = DEFAULT_SVD_RANK,
    joint_rank: int = DEFAULT_JOINT_RANK,
    individual_rank: int = DEFAULT_INDIVIDUAL_RANK,
    space: str = "h",
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance: float = DEFAULT_TOLERANCE,
    jvp: str = DEFAULT_JVP,
    seed: int = 0,
    image=None,
) -> Directions:
    """Joint directions (edit globally) first, then each region's individual directions.

    ``masks``: tensors at the input's size, or any mask sources (:mod:`regionedit.mask_sources`),
    resolved on ``image`` (needed by text, attention and segment sources)."""
    began = time.perf_counter()
    if len(masks) < 2:
        raise RegionEditError(f"JICA needs at least two regions (got {len(masks)}); for one region use RBE")
    resolved = [resolve_source(mask, image, model, "JICA", size=input_size(model, start)) for mask in masks]
    names = list(region_names or [r.source if not torch.is_tensor(m) else f"region {i}"
                                  for i, (m, r) in enumerate(zip(masks, resolved, strict=True))])
    masks = [r.mask for r in resolved]
    if joint_rank + individual_rank > svd_rank:
        raise RegionEditError(f"joint rank + individual rank ({joint_rank} + {individual_rank}) must not exceed the SVD rank {svd_rank}")
    blocks, singular, report = [], [], {"iterations": [], "converged": []}
    for name, mask in zip(names, masks, strict=True):
        region = sample_mask(model, start, mask)
        check_region(region, name)
        check_rank("SVD rank", svd_rank, region, model.channels)
        found = top_singular(jacobian(model, start, region, space, jvp), svd_rank, max_iterations=max_iterations,
                             tolerance=tolerance, generator=torch.Generator().manual_seed(checks.seed(seed)))
        blocks.append(found.singular_values.view(-1, 1) * found.vectors.reshape(svd_rank, -1))
        singular.append(found.singular_values)
        report["iterations"].append(found.iterations)
        report["converged"].append(found.converged)
    shape = tuple(found.vectors.shape[1:])
    result = jive([b.cpu() for b in blocks], joint_rank, individual_rank)
    vectors = [result.joint] + result.individual
    labels = [f"joint {i}" for i in range(joint_rank)]
    labels += [f"individual {name} {i}" for name in names for i in range(individual_rank)]
    strengths = [torch.linalg.norm(torch.cat(blocks).cpu() @ result.joint.T, dim=0)]
    strengths += [torch.linalg.norm(b.cpu() @ rows.T, dim=0) for b, rows in zip(blocks, result.individual, strict=True)]
    report |= {"jive_iterations": result.iterations, "jive_converged": result.converged,
               "region_singular_values": [[round(float(v), 6) for v in s] for s in singular],
               "seconds": round(time.perf_counter() - began, 3)}
    return Directions(
        vectors=torch.cat(vectors).reshape(-1, *shape), singular_values=torch.cat(strengths), labels=labels,
        method="jica", space=space, model=model.name, timestep=start.timestep,
        num_inference_steps=len(start.schedule), regions=names,
        ranks={"svd_rank": svd_rank, "joint_rank": joint_rank, "individual_rank": individual_rank}, report=report,
    )
