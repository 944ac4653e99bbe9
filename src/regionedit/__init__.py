"""regionedit: local, region-aware image editing with pretrained diffusion models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("regionedit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from regionedit.errors import RegionEditError

__all__ = ["RegionEditError", "__version__"]
