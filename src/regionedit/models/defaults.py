"""The embedded toy model each task runs on when no model is named (CLI, batch, web app, Python).

One table, read by every front end: ZONE, RDM and text-based DDPM editing run on the toy scenes
models; RBE on the latent toy faces model (its eye directions are more local and transfer better than
the pixel model's, at 1/8 of the time), JICA and pixel DDPM editing (noise maps shifted or tinted in
pixels) on the pixel toy faces DDPM (on the latent one JICA's individual mouth directions move the
eyes too). Chosen on validation faces: README, "RBE and JICA on toy faces". Hub ids and folders are
still accepted everywhere; these are only the defaults.
"""

from __future__ import annotations

from regionedit.errors import RegionEditError

EMBEDDED_DEFAULTS = {
    "zone": "toy/scenes-instruct",
    "rdm": "toy/scenes-t2i",
    "ddpm-text": "toy/scenes-t2i",
    "ddpm-pixel": "toy/faces-ddpm",
    "rbe": "toy/faces-ldm",
    "jica": "toy/faces-ddpm",
}
TASK_ALIASES = {"ddpm": "ddpm-text", "session": "zone", "directions": "rbe"}


def default_model(task: str) -> str:
    """The embedded model for ``task``; a clear error if this installation does not ship it."""
    from regionedit.models.loading import embedded_models

    task = TASK_ALIASES.get(task, task)
    if task not in EMBEDDED_DEFAULTS:
        raise RegionEditError(f"no default model for {task!r} (tasks: {', '.join(EMBEDDED_DEFAULTS)})")
    name = EMBEDDED_DEFAULTS[task]
    if name not in embedded_models():
        raise RegionEditError(f"no model given, and the default {name} is not in this installation: give a model "
                              "(a hub id, a diffusers folder, or one listed by `regionedit models`)")
    return name
