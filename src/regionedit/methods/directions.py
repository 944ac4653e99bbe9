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
        if not -len(self) <= index < len(self):
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
        tensors, header = read_tensors(path, FORMAT, "directions")
        meta = json.loads(header["metadata"])
        fields = {k: meta[k] for k in ("labels", "method", "space", "model", "timestep", "num_inference_steps",
                                        "regions", "ranks", "report")}
        return cls(vectors=tensors["vectors"], singular_values=tensors["singular_values"], **fields)

    def check_compatible(self, model_name: str, shape: tuple[int, ...]) -> None:
        """Refuse directions made for another model or another sample size."""
        if self.model != model_name:
            raise RegionEditError(f"these directions were found with model {self.model!r}, not {model_name!r}")
        if tuple(self.vectors.shape[1:]) != tuple(shape):
            raise RegionEditError(
                f"these directions have shape {tuple(self.vectors.shape[1:])} but this image gives "
                f"{tuple(shape)}: use an image of the size they were found at"
            )
