"""One loader for every model source: embedded toy models, tiny random models, local folders, hub ids.

Name resolution, in order:
1. ``toy/<name>``: an embedded model shipped inside the package (``regionedit/weights/<name>``);
2. ``tiny/<arch>``: a randomly initialised tiny model, built once into the cache folder;
3. an existing folder: a diffusers pipeline folder (``model_index.json`` + component folders)
   or a bare UNet folder (``config.json`` + ``scheduler_config.json``);
4. anything else: a Hugging Face hub id, loaded with ``from_pretrained`` from the local cache
   (and from the network unless ``HF_HUB_OFFLINE=1``).

Weights are read from safetensors only unless ``allow_pickle=True``; ``trust_remote_code`` is
never used.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download
from transformers import AutoTokenizer, CLIPTextModel

from regionedit.errors import RegionEditError
from regionedit.models import stored_once
from regionedit.models.backend import DiffusionModel, default_device, default_dtype
from regionedit.models.tiny import TINY_BUILDERS, save_tiny

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
TINY_VERSION = "v1"  # bump when a tiny builder changes, so cached folders are rebuilt
UNET_CLASSES = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}


def cache_dir() -> Path:
    return Path(os.environ.get("REGIONEDIT_CACHE", Path.home() / ".cache" / "regionedit"))


def embedded_models() -> dict[str, Path]:
    """Embedded toy models present in this installation, by name: diffusers pipelines and
    transformers models (CLIP, CLIPSeg); the probes are not models one loads by name."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    found = {}
    for folder in sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_dir()):
        config = folder / "config.json"
        if (folder / "model_index.json").exists() or (config.exists() and "model_type" in json.loads(config.read_text())):
            found[f"toy/{folder.name}"] = folder
    return found


def embedded_components() -> dict[str, Path]:
    """Shared parts of the embedded models that are not models of their own (the toy autoencoder,
    which the latent scene models link to as their ``vae``), by name."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    found = {}
    for folder in sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_dir()):
        config = folder / "config.json"
        if config.exists() and json.loads(config.read_text()).get("_class_name") == "AutoencoderKL":
            found[f"toy/{folder.name}"] = folder
    return found


def tiny_model_path(name: str) -> Path:
    """Build the tiny random model ``name`` into the cache (once) and return its folder."""
    folder = cache_dir() / "tiny" / f"{name.split('/', 1)[1]}-{TINY_VERSION}"
    if not (folder / "READY").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
        try:
            save_tiny(TINY_BUILDERS[name](), staging)
            (staging / "READY").touch()
            shutil.rmtree(folder, ignore_errors=True)  # an unfinished copy from an interrupted build
            try:
                staging.rename(folder)
            except OSError:  # another process finished first
                if not (folder / "READY").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve(name: str) -> tuple[str, str]:
    """Where ``name`` lives: ("folder", path) or ("hub", repo id)."""
    if name.startswith("toy/"):
        embedded = embedded_models()
        if name not in embedded:
            known = ", ".join(embedded) or "none in this version"
            raise RegionEditError(f"unknown embedded model {name!r} (embedded models: {known}); one not shipped yet can be "
                                  f"trained with `regionedit toyworld train {name[4:]} --out DIR` and given as DIR")
        return "folder", str(embedded[name])
    if name.startswith("tiny/"):
        if name not in TINY_BUILDERS:
            raise RegionEditError(f"unknown tiny model {name!r} (tiny models: {', '.join(TINY_BUILDERS)})")
        return "folder", str(tiny_model_path(name))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise RegionEditError(f"model path {name} is a file; give a diffusers model folder")
        return "folder", str(path)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise RegionEditError(
            f"model {name!r} is neither a folder, an embedded or tiny model, nor a hub id of the form owner/name"
        )
    return "hub", name


def local_folder(name: str) -> Path | None:
    """The folder a model of this name was loaded from, or None (a hub id, or a name no loader knows)."""
    try:
        kind, where = resolve(name)
    except RegionEditError:
        return None
    return Path(where) if kind == "folder" else None


def load_model(
    name: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> DiffusionModel:
    """Load a model by name (see the module docstring) onto ``device`` (GPU if present)."""
    kind, location = resolve(name)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    loader = _ComponentLoader(location, kind == "hub", allow_pickle, dtype)
    try:
        components = loader.load_all()
    except RegionEditError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise RegionEditError(loader.explain(name, exc)) from None
    return DiffusionModel(**components, name=name, device=device, dtype=dtype)


def load_text_encoder(location: str | Path, subfolder: str | None = None, whole_clip: bool = False, **kwargs) -> CLIPTextModel:
    """A CLIP text encoder. ``whole_clip``: the folder holds a whole CLIP (the toy scene models link
    to ``scenes-clip``, stored once), so the vision tower's weights are expected to go unused and
    transformers' report of them is silenced."""
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    if whole_clip:
        transformers_logging.set_verbosity_error()
    try:
        return CLIPTextModel.from_pretrained(location, subfolder=subfolder or "", **kwargs)
    finally:
        transformers_logging.set_verbosity(level)


class _ComponentLoader:
    """Reads the components of one model source, tolerating the old root-level layouts."""

    def __init__(self, location: str, is_hub: bool, allow_pickle: bool, dtype: torch.dtype):
        self.location = location
        self.is_hub = is_hub
        self.offline = is_hub and bool(hub_constants.HF_HUB_OFFLINE)
        self.kwargs = {"use_safetensors": not allow_pickle}
        if is_hub:
            self.kwargs["local_files_only"] = self.offline
        self.diffusers_kwargs = {**self.kwargs, "torch_dtype": dtype}
        self.transformers_kwargs = {**self.kwargs, "dtype": dtype}

    def read_json(self, filename: str) -> dict | None:
        if not self.is_hub:
            path = Path(self.location) / filename
            return json.loads(path.read_text()) if path.exists() else None
        try:
            path = hf_hub_download(self.location, filename, local_files_only=self.offline)
        except Exception as exc:  # noqa: BLE001 - hub errors have many classes; only "absent" is expected
            if type(exc).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                return None
            raise OSError(str(exc)) from exc
        return json.loads(Path(path).read_text())

    def has(self, subfolder: str) -> bool:
        return self.is_hub or (Path(self.location) / subfolder).is_dir()

    def load_all(self) -> dict:
        index = self.read_json("model_index.json")
        if index is None and self.read_json("config.json") is None:
            raise RegionEditError(f"{self.location} is not a diffusers model: no model_index.json or config.json")
        index = index or {}
        unet_class = index.get("unet", [None, None])[1] or (self.read_json("config.json") or {}).get("_class_name")
        if unet_class not in UNET_CLASSES:
            raise RegionEditError(f"{self.location}: unsupported UNet class {unet_class!r} (supported: {', '.join(UNET_CLASSES)})")
        components = {
            "unet": self.with_root_fallback(UNET_CLASSES[unet_class], "unet"),
            "scheduler": self.scheduler(),
        }
        if "vae" in index:
            components["vae"] = AutoencoderKL.from_pretrained(self.location, subfolder="vae", **self.diffusers_kwargs)
        if "text_encoder" in index:
            shared = (self.read_json("text_encoder/config.json") or {}).get("model_type") == "clip"
            components["text_encoder"] = load_text_encoder(self.location, "text_encoder", shared, **self.transformers_kwargs)
            components["tokenizer"] = AutoTokenizer.from_pretrained(self.location, subfolder="tokenizer", **self._hub_only())
        return components

    def with_root_fallback(self, cls, subfolder: str):
        if not self.is_hub and stored_once.stores_once(Path(self.location) / subfolder):
            return stored_once.build(cls, Path(self.location) / subfolder, self.diffusers_kwargs["torch_dtype"])
        if self.has(subfolder):
            try:
                return cls.from_pretrained(self.location, subfolder=subfolder, **self.diffusers_kwargs)
            except OSError:
                if not self.is_hub:
                    raise
        return cls.from_pretrained(self.location, **self.diffusers_kwargs)

    def scheduler(self) -> DDIMScheduler:
        # The samplers use only the β schedule, so any scheduler config is read as DDIM's.
        if self.has("scheduler"):
            try:
                return DDIMScheduler.from_pretrained(self.location, subfolder="scheduler", **self._hub_only())
            except OSError:
                if not self.is_hub:
                    raise
        return DDIMScheduler.from_pretrained(self.location, **self._hub_only())

    def _hub_only(self) -> dict:
        return {"local_files_only": self.kwargs["local_files_only"]} if self.is_hub else {}

    def explain(self, name: str, exc: Exception) -> str:
        return unavailable(name, self.location, exc, self.is_hub, self.offline, self.kwargs["use_safetensors"])


def unavailable(name: str, location: str, exc: Exception, is_hub: bool, offline: bool, safetensors_only: bool) -> str:
    """One line on why a model could not be loaded and what to do."""
    text = " ".join(str(exc).split())
    if "safetensors" in text.lower() and safetensors_only:
        return f"model {name!r} has no safetensors weights; if you trust its source, load pickled weights with allow_pickle=True (CLI: --allow-pickle)"
    if is_hub:
        where = "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if offline else "it could not be fetched from the hub"
        return (
            f"model {name!r} is not available offline: {where}. Download it on a machine with hub access "
            f"(`hf download {name}`) and copy the cache, or pass a local folder; "
            f"embedded and tiny models need no download (`regionedit models`)"
        )
    return f"cannot load model from {location}: {text[:300]}"


def load_transformers(name: str, model_class, device=None, dtype=None, allow_pickle: bool = False, tokenizer: bool = True):
    """A transformers model and its tokenizer from one folder or hub repo (CLIP, CLIPSeg, SAM)."""
    kind, location = resolve(name)
    device = torch.device(device) if device is not None else default_device()
    offline = kind == "hub" and bool(hub_constants.HF_HUB_OFFLINE)
    hub = {"local_files_only": offline} if kind == "hub" else {}
    try:
        if kind == "folder" and stored_once.stores_once(location):
            model = stored_once.build(model_class, location, dtype or torch.float32)
        else:
            model = model_class.from_pretrained(location, use_safetensors=not allow_pickle, dtype=dtype or torch.float32, **hub)
        tokenizer = AutoTokenizer.from_pretrained(location, **hub) if tokenizer else None
    except (OSError, ValueError, KeyError) as exc:
        raise RegionEditError(unavailable(name, location, exc, kind == "hub", offline, not allow_pickle)) from None
    return model.to(device).eval().requires_grad_(False), tokenizer
