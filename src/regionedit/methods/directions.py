"""Edit directions found by RBE or JICA: a file format, compatibility checks, sliders."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from regionedit import __version__
from regionedit.errors import RegionEditError
from regionedit.images import read_tensors, write_tensors

FORMAT = "regionedit.directions"


@dataclass
class Directions:
    """Unit vectors in h-space (or x_t-space) at one timestep, strongest first within each group."""

    vectors: torch.Tensor  # (k, *shape)
    singular_values: torch.Tensor  # (k,) of the Jacobian each vector came from
    labels: list[str]  # what each vector is ("region 0", "joint 1", "individual eyes 0", …)
    method: str  # "rbe" or "jica"
    space: str  # "h" or "x"
    model: str
    timestep: int
    num_inference_steps: int
    regions: list[str]  # the mask specifications
    ranks: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # leakage ratios, iterations, convergence, seconds

    def __len__(self) -> int:
        return len(self.vectors)

    def vector(self, index: int) -> torch.Tensor:
        if isinstance(index, bool) or not isinstance(index, int) or not -len(self) <= index < len(self):
            raise RegionEditError(f"direction index {index} out of range: the file holds {len(self)} ({', '.join(self.labels)})")
        return self.vectors[index]

    def metadata(self) -> dict:
        meta = {k: v for k, v in asdict(self).items() if k not in ("vectors", "singular_values")}
        meta["shape"] = list(self.vectors.shape[1:])
        meta["singular_values"] = [round(float(s), 6) for s in self.singular_values]
        meta["version"] = __version__
        return meta

    def save(self, path: str | Path) -> Path:
        tensors = {"vectors": self.vectors.float(), "singular_values": self.singular_values.float()}
        return write_tensors(path, tensors, FORMAT, {"metadata": json.dumps(self.metadata(), default=str)})

    @classmethod
    def load(cls, path: str | Path) -> Directions:
        """Read a directions file; a damaged or tampered one is refused in one line."""
        tensors, header = read_tensors(path, FORMAT, "directions")
        try:
            meta = json.loads(header["metadata"])
            fields = {k: meta[k] for k in ("labels", "method", "space", "model", "timestep", "num_inference_steps",
                                            "regions", "ranks", "report")}
            directions = cls(vectors=tensors["vectors"], singular_values=tensors["singular_values"], **fields)
            problem = directions._inconsistency()
        except (KeyError, TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            problem = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:120]
        if problem:
            raise RegionEditError(f"directions file {path} is damaged or was edited: {problem}")
        return directions

    def _inconsistency(self) -> str | None:
        """What makes loaded directions unusable, or None."""
        if self.vectors.dim() < 2 or len(self.vectors) == 0:
            return f"vectors have shape {tuple(self.vectors.shape)}, expected k × (vector shape)"
        if not torch.isfinite(self.vectors).all():
            return "the vectors hold NaN or infinite values"
        if not isinstance(self.labels, list) or len(self.labels) != len(self.vectors):
            return f"{len(self.vectors)} vectors but labels {self.labels!r:.60}"
        if self.method not in ("rbe", "jica") or self.space not in ("h", "x") or not isinstance(self.model, str):
            return f"unknown method {self.method!r}, space {self.space!r} or model {self.model!r}"
        for name in ("timestep", "num_inference_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == "num_inference_steps"):
                return f"{name} {value!r} is not a valid integer"
        if not isinstance(self.ranks, dict) or not isinstance(self.report, dict) or not isinstance(self.regions, list):
            return "ranks, report or regions have the wrong type"
        return None

    def check_model(self, model_name: str) -> None:
        """Refuse directions made for another model (before any inversion: another model's schedule
        may not even have their timestep)."""
        if self.model != model_name:
            raise RegionEditError(f"these directions were found with model {self.model!r}, not {model_name!r}")

    def check_compatible(self, model_name: str, shape: tuple[int, ...]) -> None:
        """Refuse directions made for another model or another sample size."""
        self.check_model(model_name)
        if tuple(self.vectors.shape[1:]) != tuple(shape):
            raise RegionEditError(
                f"these directions have shape {tuple(self.vectors.shape[1:])} but this image gives "
                f"{tuple(shape)}: use an image of the size they were found at"
            )
