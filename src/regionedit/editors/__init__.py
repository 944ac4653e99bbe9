"""One editor per method, diffusers-style: ``Editor.from_pretrained(name)`` loads the model and the
companions its method needs (segmenter, CLIP, a second instruct model, …), and calling the editor
with keyword arguments edits an image and returns an :class:`EditorOutput` (the image, the masks,
the recipe and the [0, 1] pixel tensor). Defaults are the papers' (the constants of
:mod:`regionedit.methods`); conventions shared by all: :mod:`regionedit.editors.base`.

| editor | method | calls |
| --- | --- | --- |
| :class:`DDPMEditor` | edit-friendly DDPM inversion, text edit, Prompt-to-Prompt | ``invert``, ``edit``, ``__call__`` |
| :class:`RBEEditor` | region directions in h-space | ``discover`` → Directions → ``apply`` / ``strip`` |
| :class:`JICAEditor` | joint and individual directions | ``discover`` → Directions → ``apply`` / ``strip`` |
| :class:`RDMEditor` | text-located region, guided sampling | ``__call__`` |
| :class:`ZoneEditor` | instruction, fused instruct models | ``__call__``, ``edit_many`` |
"""

from regionedit.editors.base import Editor, EditorOutput
from regionedit.editors.ddpm import DDPMEditor
from regionedit.editors.directions import JICAEditor, RBEEditor
from regionedit.editors.rdm import RDMEditor
from regionedit.editors.zone import ZoneEditor

__all__ = ["DDPMEditor", "Editor", "EditorOutput", "JICAEditor", "RBEEditor", "RDMEditor", "ZoneEditor"]
