"""regionedit: local, region-aware image editing with pretrained diffusion models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("regionedit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from regionedit.errors import RegionEditError

EDITORS = ("DDPMEditor", "EditorOutput", "JICAEditor", "RBEEditor", "RDMEditor", "ZoneEditor")
__all__ = ["RegionEditError", "__version__", *EDITORS]


def __getattr__(name: str):
    """The editors (:mod:`regionedit.editors`), imported on first use: ``import regionedit`` stays light."""
    if name in EDITORS:
        from regionedit import editors

        return getattr(editors, name)
    raise AttributeError(f"module 'regionedit' has no attribute {name!r}")
