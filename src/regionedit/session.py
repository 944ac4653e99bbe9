"""Multi-turn editing sessions: instructions applied one after another, each changing only the
pixels of its own mask, with history and undo, saved to a folder.

Folder layout: ``session.json`` (the history; written last, atomically, so an interrupted turn
leaves the session as it was), ``turn-000.png`` (a copy of the input), and per turn
``turn-NNN.png`` (the image after it), ``mask-NNN.png`` (its final mask), ``layer-NNN.png`` (the
RGBA edited layer). Undone turns move to ``undone/``.

A session folder is input as well as output: :meth:`Session.open` checks ``session.json`` (its
structure, and that every file it names is a plain name inside the folder), and a refused call
leaves the folder as it was.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from regionedit import __version__
from regionedit.errors import RegionEditError
from regionedit.images import atomic_write, load_image, save_png

STATE = "session.json"
TURN_FILE = re.compile(r"^(turn|mask|layer)-\d{3,}\.png$")


class Session:
    def __init__(self, folder: str | Path, state: dict):
        self.folder = Path(folder)
        self.state = state

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def new(cls, folder: str | Path, image_path: str | Path) -> Session:
        folder = Path(folder)
        if (folder / STATE).exists():
            raise RegionEditError(f"{folder} already holds a session; open it or choose another folder")
        if folder.exists() and not folder.is_dir():
            raise RegionEditError(f"{folder} is a file, not a folder; choose a folder for the session")
        loaded = load_image(image_path)
        folder.mkdir(parents=True, exist_ok=True)
        save_png(loaded.image, folder / "turn-000.png", {"source": Path(image_path).name})
        session = cls(folder, {"version": __version__, "input": Path(image_path).name, "notes": loaded.notes,
                               "size": list(loaded.image.size), "turns": []})
        session._write_state()
        return session

    @classmethod
    def open(cls, folder: str | Path) -> Session:
        path = Path(folder) / STATE
        if not path.exists():
            raise RegionEditError(f"no session in {folder} (start one with `regionedit session new {folder} IMAGE`)")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegionEditError(f"{path} is damaged ({exc.__class__.__name__}); the session cannot be opened") from None
        problem = state_problem(state)
        if problem:
            raise RegionEditError(f"{path} is damaged or was edited: {problem}")
        return cls(folder, state)

    def _write_state(self) -> None:
        atomic_write(self.folder / STATE, lambda tmp: tmp.write_text(json.dumps(self.state, indent=2)))

    # ------------------------------------------------------------------ state
    @property
    def turns(self) -> list[dict]:
        return self.state["turns"]

    def current_path(self) -> Path:
        return self.folder / (self.turns[-1]["image"] if self.turns else "turn-000.png")

    def current_image(self) -> Image.Image:
        """The image after the last turn, as it was saved (a missing or damaged file is refused)."""
        path = self.current_path()
        try:
            with Image.open(path) as image:
                current = image.convert("RGB")
        except (OSError, ValueError, SyntaxError):
            raise RegionEditError(f"the session's current image {path} is missing or damaged; "
                                  f"`regionedit session undo {self.folder}` goes back a turn") from None
        return current

    # ------------------------------------------------------------------ editing
    def apply(self, edit_fn, instruction: str) -> dict:
        """Run ``edit_fn(image, instruction) → ZoneOutput`` on the current image and record the turn."""
        index = len(self.turns) + 1
        output = edit_fn(self.current_image(), instruction)
        names = {"image": f"turn-{index:03d}.png", "mask": f"mask-{index:03d}.png", "layer": f"layer-{index:03d}.png"}
        save_png(output.image, self.folder / names["image"], output.recipe)
        mask = (output.final_mask[0, 0].numpy() * 255).astype(np.uint8)
        save_png(Image.fromarray(mask), self.folder / names["mask"])
        save_png(output.layer, self.folder / names["layer"], output.recipe)
        turn = {"index": index, "instruction": instruction, **names, "recipe": output.recipe}
        self.turns.append(turn)
        self._write_state()
        return turn

    def undo(self) -> dict:
        """Drop the last turn (its files move to ``undone/``); the image before it is current again."""
        if not self.turns:
            raise RegionEditError("nothing to undo: the session has no edits")
        undone = self.folder / "undone"
        if undone.exists() and not undone.is_dir():
            raise RegionEditError(f"{undone} is a file, not a folder: move it away to undo")
        undone.mkdir(exist_ok=True)
        turn = self.turns.pop()
        self._write_state()
        for key in ("image", "mask", "layer"):
            source = self.folder / turn[key]
            if source.exists():
                shutil.move(str(source), undone / turn[key])
        return turn

    def union_mask(self) -> torch.Tensor:
        """1×1×H×W: every pixel any turn was allowed to change."""
        width, height = self.state["size"]
        union = torch.zeros(1, 1, height, width)
        for turn in self.turns:
            with Image.open(self.folder / turn["mask"]) as mask:
                union = torch.maximum(union, torch.from_numpy(np.asarray(mask) > 127).float().view(1, 1, height, width))
        return union

    def describe(self) -> str:
        lines = [f"session {self.folder} (input {self.state['input']}, {len(self.turns)} turns)"]
        for turn in self.turns:
            recipe = turn["recipe"]
            notes = f" [{'; '.join(recipe['notes'])}]" if recipe.get("notes") else ""
            lines.append(f"  {turn['index']}. {turn['instruction']!r} → {turn['image']} ({recipe['action']}){notes}")
        return "\n".join(lines)


def state_problem(state) -> str | None:
    """What is wrong with a loaded ``session.json`` (structure, types, file names), or None."""
    if not isinstance(state, dict):
        return "not a JSON object"
    size = state.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        return "'size' must be [width, height]"
    turns = state.get("turns")
    if not isinstance(turns, list) or not isinstance(state.get("input"), str):
        return "'turns' must be a list and 'input' a name"
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or turn.get("index") != number or not isinstance(turn.get("instruction"), str):
            return f"turn {number} is malformed"
        if not all(isinstance(turn.get(k), str) and TURN_FILE.match(turn[k]) for k in ("image", "mask", "layer")):
            return f"turn {number} names files outside the session's own turn-/mask-/layer-NNN.png"
        if not isinstance(turn.get("recipe"), dict) or not isinstance(turn["recipe"].get("action"), str):
            return f"turn {number} has no recipe"
    return None
