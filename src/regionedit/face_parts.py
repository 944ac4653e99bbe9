"""Where each small part of a toy-world face can appear, for any factor values.

Boxes ``(x0, y0, x1, y1)`` as fractions of the image width. The toy-world renderer
(:mod:`regionedit.toyworld.faces`) draws each part only inside its box, and a ``face:<part>`` mask
(:func:`regionedit.masks.face_part_mask`) is that box, so it covers the part on every face. A leaf
module: masks read the boxes without importing the toy world.
"""

from __future__ import annotations

PART_BOXES: dict[str, tuple[float, float, float, float]] = {
    "left_eye": (0.325, 0.47, 0.485, 0.59),
    "right_eye": (0.515, 0.47, 0.675, 0.59),
    "mouth": (0.40, 0.64, 0.60, 0.79),
    "glasses": (0.21, 0.44, 0.79, 0.62),
    "hat": (0.20, 0.06, 0.80, 0.30),
}
PART_BOXES["eyes"] = (PART_BOXES["left_eye"][0], 0.47, PART_BOXES["right_eye"][2], 0.59)
