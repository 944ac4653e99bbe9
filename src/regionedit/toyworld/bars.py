"""The embedded toy models' quality bars and their cards.

Each model has one figure and a minimum (:data:`BARS`, measured by
:mod:`regionedit.toyworld.evaluation`); the instruct models need the minimum for every action, and
the main one must also keep the background. A model's card (``card.json``) records its last
measurement with the verdict (``meets_bar``), which the model list reads back as one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from regionedit.images import atomic_write

# The bars: (figure, minimum); the instruct models need the minimum for every action.
BARS = {
    "toy/scenes-vae": ("reconstruction_psnr", 32.0),
    "toy/scenes-clip": ("text_to_image_top1", 0.9),
    "toy/scenes-clipseg": ("mean_iou", 0.8),
    "toy/faces-ddpm": ("valid_face_share", 0.9),
    "toy/faces-vae": ("reconstruction_psnr", 32.0),
    "toy/faces-ldm": ("valid_face_share", 0.9),
    "toy/scenes-t2i": ("caption_correct_share", 0.8),
    "toy/scenes-instruct": ("edit_success", 0.8),
}


CLIPSEG_MIN_ABSENT_EMPTY = 0.9  # and CLIPSeg leaves the mask empty for a phrase naming an absent kind
INSTRUCT_MAX_BACKGROUND_L1 = 0.03  # and the instruct model keeps the background before any paste-back
# The remove model (MagicBrush-like): removals ≥ 10 points above the main instruct model's, or ≥ 90 %.
MAIN_INSTRUCT, REMOVE_INSTRUCT = "toy/scenes-instruct", "toy/scenes-instruct-remove"
REMOVE_MIN_GAIN, REMOVE_MIN_SHARE = 0.10, 0.90
MEASURED = (*BARS, REMOVE_INSTRUCT)


def _clipseg_fills_absent(name: str, figures: dict) -> bool:
    """CLIPSeg's second bar is missed: too few empty masks for phrases naming an absent kind."""
    return name == "toy/scenes-clipseg" and (figures.get("absent_empty_share") or 0) < CLIPSEG_MIN_ABSENT_EMPTY


def meets_bar(name: str, figures: dict, main: dict | None = None) -> bool | None:
    """Whether ``figures`` (one model's measurement) reach its bar; None where it cannot be judged.
    ``main``: the main instruct model's figures, which the remove model's bar compares with."""
    if name == REMOVE_INSTRUCT:
        try:
            removals, main_removals = figures["edit_success"]["remove"], main["edit_success"]["remove"]
        except (KeyError, TypeError):
            return None
        return removals >= REMOVE_MIN_SHARE or round(removals - main_removals, 6) >= REMOVE_MIN_GAIN
    figure, minimum = BARS.get(name, (None, None))
    if figure is None or figure not in figures:
        return None
    value = figures[figure]
    if name == MAIN_INSTRUCT and "background_l1" in figures and figures["background_l1"]["overall"] > INSTRUCT_MAX_BACKGROUND_L1:
        return False
    if _clipseg_fills_absent(name, figures):
        return False
    if isinstance(value, dict):
        return all(v >= minimum for k, v in value.items() if k != "overall")
    return value >= minimum


def card_evaluation(folder: Path | None) -> dict | None:
    """The ``evaluation`` recorded in a model folder's card, if any."""
    card = folder / "card.json" if folder is not None else None
    return json.loads(card.read_text()).get("evaluation") if card is not None and card.exists() else None


def _shortfall(name: str, evaluation: dict) -> str:
    figure, minimum = BARS[name]
    value = evaluation.get(figure)
    if isinstance(value, dict):
        below = ", ".join(f"{k} {v}" for k, v in value.items() if k != "overall" and v < minimum)
        text = f"{figure} below {minimum} for {below}" if below else ""
    else:
        text = f"{figure} {value} < {minimum}" if value is not None and value < minimum else ""
    if _clipseg_fills_absent(name, evaluation):
        text += ("; " if text else "") + f"empty masks for absent objects {evaluation.get('absent_empty_share')} < {CLIPSEG_MIN_ABSENT_EMPTY}"
    background = (evaluation.get("background_l1") or {}).get("overall")
    if name == MAIN_INSTRUCT and background is not None and background > INSTRUCT_MAX_BACKGROUND_L1:
        text += ("; " if text else "") + f"background L1 {background} > {INSTRUCT_MAX_BACKGROUND_L1}"
    return text


def model_status(folder: Path) -> str:
    """One line from a model's card: its quality bar met, or preliminary with the measured figure."""
    evaluation = card_evaluation(folder) or {}
    if evaluation.get("meets_bar") is True:
        return "meets its quality bar (card.json)"
    if evaluation.get("meets_bar") is False:
        if f"toy/{folder.name}" == REMOVE_INSTRUCT:
            shortfall = (f"removal success {evaluation['edit_success']['remove']} is below {REMOVE_MIN_SHARE} and not "
                         f"{REMOVE_MIN_GAIN:.0%} above {MAIN_INSTRUCT}'s")
        else:
            shortfall = _shortfall(f"toy/{folder.name}", evaluation)
        return f"PRELIMINARY: {shortfall} (card.json); train further with --resume"
    return "not yet measured (regionedit bench toymodels)"


def update_cards(result: dict) -> None:
    """Write each model's measurement into its card (``evaluation``, with the machine and command)."""
    from regionedit.models.loading import embedded_components, embedded_models

    folders = {**embedded_models(), **embedded_components()}
    for name, figures in result.items():
        if name in folders and isinstance(figures, dict):
            path = folders[name] / "card.json"
            card = json.loads(path.read_text())
            card["evaluation"] = {**figures, "machine": result["machine"], "command": f"regionedit bench toymodels {name} --update-cards"}
            atomic_write(path, lambda tmp, card=card: tmp.write_text(json.dumps(card, indent=2, default=str)))
