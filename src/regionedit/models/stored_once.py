"""Embedded weights stored once: a model folder whose weights file leaves out what another embedded
folder already holds.

The embedded toy models must fit a small budget (40 MB in all), and several of them are made from
one another. Two relations are stored instead of copies, each described by ``stored_once.json`` in
the model's folder (the one holding ``config.json``):

- **shared tensors** (``"shared"``): tensors copied unchanged from a base folder, by name prefix.
  The toy CLIPSeg keeps the toy CLIP's text tower frozen, so it stores only its vision tower and
  decoder and takes ``clip.text_model.*`` / ``clip.text_projection.*`` from ``../scenes-clip``;
- **a fine-tune as its base plus a difference** (``"difference": "int8"``): every tensor is the
  base's plus a difference quantised to int8 with one fp32 scale per output channel (the first
  dimension; biases and norms are kept as they are), as fine-tuned weights are often released as deltas. The remove-tuned instruct
  model is stored so against the instruct model it was tuned from. The quantisation error is at
  most half a step, 1/254 of the channel's largest change; the card reports the bar re-measured
  on the stored weights.

Hub models and other folders never carry the file and load as they always do; ``load_state`` is
only called for folders that do. Saving refuses to drop a "shared" tensor that differs from the
base's, so a folder can never load other weights than the ones it was written from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from regionedit.errors import RegionEditError

MANIFEST = "stored_once.json"
WEIGHTS_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors")


def stores_once(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def weights_file(folder: Path) -> Path:
    found = [folder / name for name in WEIGHTS_FILES if (folder / name).is_file()]
    if not found:
        raise RegionEditError(f"{folder}: no safetensors weights ({' or '.join(WEIGHTS_FILES)})")
    return found[0]


def load_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The complete state dict of a folder with a ``stored_once.json``."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    base_folder = (folder / manifest["base"]).resolve()
    if not base_folder.is_dir():
        raise RegionEditError(f"{folder}: its base {manifest['base']} is missing (weights stored once need it beside them)")
    own, base = load_file(weights_file(folder)), load_file(weights_file(base_folder))
    if manifest.get("difference") == "int8":
        return {name: own[name] if name in own else _undifference(base[name], own[f"{name}.q"], own[f"{name}.scale"])
                for name in base}
    state = dict(own)
    for prefix, base_prefix in manifest["shared"].items():
        state.update({prefix + name[len(base_prefix):]: tensor for name, tensor in base.items() if name.startswith(base_prefix)})
    return state


def save_shared(folder: str | Path, base: str | Path, shared: dict[str, str]) -> float:
    """Rewrite ``folder``'s weights without the tensors that equal ``base``'s under the ``shared``
    prefixes ({own prefix: base prefix}); returns the MB saved. Raises if any of them differ."""
    folder, base = Path(folder), Path(base)
    target = weights_file(folder)
    own, theirs = load_file(target), load_file(weights_file(base))
    kept = dict(own)
    for prefix, base_prefix in shared.items():
        names = [name for name in own if name.startswith(prefix)]
        if not names:
            raise RegionEditError(f"{folder}: no tensor starts with {prefix!r}")
        for name in names:
            other = theirs.get(base_prefix + name[len(prefix):])
            if other is None or other.shape != own[name].shape or not torch.equal(other.to(own[name].dtype), own[name]):
                raise RegionEditError(f"{folder}: {name} differs from {base}'s {base_prefix + name[len(prefix):]}: not shareable")
            del kept[name]
    _write(folder, target, kept, {"base": os.path.relpath(base, folder), "shared": shared})
    return _saved(own, kept)


def save_difference(folder: str | Path, base: str | Path) -> float:
    """Rewrite ``folder``'s weights as ``base``'s plus an int8 difference; returns the largest
    absolute error it leaves in any weight."""
    folder, base = Path(folder), Path(base)
    target = weights_file(folder)
    own, theirs = load_file(target), load_file(weights_file(base))
    if own.keys() != theirs.keys() or any(own[k].shape != theirs[k].shape for k in own):
        raise RegionEditError(f"{folder} and {base} are not the same architecture: no difference to store")
    stored, worst = {}, 0.0
    for name, tensor in own.items():
        if tensor.dim() < 2:  # biases and norms: kept as they are (a few KB)
            stored[name] = tensor
            continue
        q, scale = _quantise(tensor.float() - theirs[name].float())
        stored[f"{name}.q"], stored[f"{name}.scale"] = q, scale
        worst = max(worst, float((_undifference(theirs[name], q, scale).float() - tensor.float()).abs().max()))
    _write(folder, target, stored, {"base": os.path.relpath(base, folder), "difference": "int8"})
    return worst


def _quantise(difference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = difference.reshape(difference.shape[0], -1)
    scale = (rows.abs().amax(1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(rows / scale).clamp(-127, 127).to(torch.int8)
    return q.reshape(difference.shape), scale.flatten()


def _undifference(base: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    rows = q.reshape(q.shape[0], -1).float()
    change = (rows * scale.float().unsqueeze(1)).reshape(base.shape)
    return (base.float() + change).to(base.dtype)


def _write(folder: Path, target: Path, tensors: dict, manifest: dict) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    (folder / f".{MANIFEST}.tmp").write_text(json.dumps(manifest, indent=2))
    tmp.chmod(0o644)  # safetensors writes 0600; shipped files are read by every user
    os.replace(tmp, target)
    os.replace(folder / f".{MANIFEST}.tmp", folder / MANIFEST)


def _saved(before: dict, after: dict) -> float:
    size = lambda tensors: sum(t.numel() * t.element_size() for t in tensors.values())  # noqa: E731
    return (size(before) - size(after)) / 2**20


def from_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32):
    """A model of class ``cls`` from a local folder, stored once or written by ``save_pretrained``."""
    if stores_once(folder):
        return build(cls, folder, dtype)
    return cls.from_pretrained(folder, **{"dtype" if _is_transformers(cls) else "torch_dtype": dtype})


def _is_transformers(cls) -> bool:
    return hasattr(cls, "config_class") and hasattr(cls.config_class, "from_pretrained")


def build(cls, folder: str | Path, dtype: torch.dtype = torch.float32):
    """A diffusers or transformers model of class ``cls`` from a folder with a ``stored_once.json``."""
    folder = Path(folder)
    if _is_transformers(cls):
        model = cls(cls.config_class.from_pretrained(folder))
    else:  # diffusers
        model = cls.from_config(cls.load_config(folder))
    missing, unexpected = model.load_state_dict(load_state(folder), strict=False)
    missing = [name for name in missing if not name.endswith("position_ids")]
    if missing or unexpected:
        raise RegionEditError(f"{folder}: stored weights do not fit {cls.__name__} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return torch.nn.Module.to(model, dtype).eval()  # diffusers' own .to() warns about any cast
