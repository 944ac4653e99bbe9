"""Procedural toy worlds with ground truth for every region, factor and edit.

- :mod:`regionedit.toyworld.faces`: faces with named factors and part masks; ``Faces.replace``.
- :mod:`regionedit.toyworld.scenes`: sky, ground and objects; instructions with targets and masks.
- :mod:`regionedit.toyworld.probes`: CNNs that read the factors back (they judge edits).
- :mod:`regionedit.toyworld.splits`: the seed ranges of train, validation and benchmark.
"""

from regionedit.toyworld.faces import Faces, generate_face_edits, generate_faces
from regionedit.toyworld.scenes import SceneEdits, Scenes, generate_edits, generate_scenes
from regionedit.toyworld.splits import split_seeds

__all__ = ["Faces", "Scenes", "SceneEdits", "generate_faces", "generate_face_edits", "generate_scenes",
           "generate_edits", "split_seeds"]
