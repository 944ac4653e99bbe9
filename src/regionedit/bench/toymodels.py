"""`regionedit bench toymodels`: the quality bars of the embedded toy-world models, as JSON.

For each named model: load it, measure its bar figure (:mod:`regionedit.toyworld.evaluation`) and,
for the diffusion models, the seconds for a 20-step guided sample at 64² on 2 CPU threads; then
judge every figure against its bar (:mod:`regionedit.toyworld.bars`, the remove model's against
the main instruct model's). The measuring, the bars and the cards live in ``toyworld``; the names
are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import os

from regionedit.bench import machine
from regionedit.toyworld.bars import (
    BARS,
    INSTRUCT_MAX_BACKGROUND_L1,
    MAIN_INSTRUCT,
    MEASURED,
    REMOVE_INSTRUCT,
    card_evaluation,
    meets_bar,
    model_status,
    update_cards,
)
from regionedit.toyworld.evaluation import (
    eval_clip,
    eval_clipseg,
    eval_faces_ddpm,
    eval_instruct,
    eval_t2i,
    eval_vae,
    frechet_distance,
    generate,
    sample_seconds,
    valid_faces,
)

__all__ = [
    "BARS", "INSTRUCT_MAX_BACKGROUND_L1", "MAIN_INSTRUCT", "MEASURED", "REMOVE_INSTRUCT", "card_evaluation",
    "meets_bar", "model_status", "update_cards", "eval_clip", "eval_clipseg", "eval_faces_ddpm", "eval_instruct",
    "eval_t2i", "eval_vae", "frechet_distance", "generate", "sample_seconds", "valid_faces", "bench_toymodels",
]


def _folder_config(name: str) -> dict:
    """A model folder's config.json (empty for hub or toy names and for pipeline folders)."""
    import json
    from pathlib import Path

    config = Path(name) / "config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


def _is_clipseg_folder(name: str) -> bool:
    return _folder_config(name).get("model_type") == "clipseg"


def _is_autoencoder(name: str) -> bool:
    from regionedit.models.loading import embedded_components

    return name in embedded_components() or _folder_config(name).get("_class_name") == "AutoencoderKL"


def bench_toymodels(names: list[str], device=None, count: int | None = None, split: str = "benchmark") -> dict:
    """Measure each model's bar figures. ``names``: embedded ``toy/…`` names, or model folders (a
    training run that is not shipped, e.g. an ablation) measured as their kind of model is.
    ``split="validation"`` is for choosing settings; the bars are judged on the benchmark split."""
    from regionedit.models import load_model
    from regionedit.models.loading import embedded_models
    from regionedit.segment import load_clip, load_segmenter

    result = {"benchmark": "toymodels", "split": split, "machine": machine()}
    for name in names:
        if _is_autoencoder(name):
            result[name] = eval_vae(count or 256, device, split, location=name)
            continue
        if name == "toy/scenes-clip":
            figures = eval_clip(load_clip(name, device), count or 100)
        elif name == "toy/scenes-clipseg" or _is_clipseg_folder(name):
            figures = eval_clipseg(load_segmenter(name, device), count or 200, split=split)
        else:
            model = load_model(name, device=device)
            if model.is_instruct:
                figures = eval_instruct(name, count or 400, device, split)
            elif model.is_text_conditional:
                figures = eval_t2i(model, count or 256, split=split)
            else:
                figures = eval_faces_ddpm(model, count or 256)
            figures["cpu_20_step_sample_s"] = sample_seconds(load_model(name, device="cpu"))
            figures["cpu_load_average_1min"] = round(os.getloadavg()[0], 2)  # > the cores: the time above was shared
        result[name] = figures
    for name in names:  # after the loop: the remove model's bar needs the main model's figures
        main = result.get(MAIN_INSTRUCT) or card_evaluation(embedded_models().get(MAIN_INSTRUCT))
        result[name]["meets_bar"] = meets_bar(name, result[name], main)
    return result

