"""The CAM engine: capture, layer resolution, methods, and ``compute_cam``."""

from .core import CamResult, compute_cam
from .methods import METHODS

__all__ = ["CamResult", "compute_cam", "METHODS"]
