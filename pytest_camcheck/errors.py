"""Errors a user can fix. Every message names the problem and the fix."""

from __future__ import annotations


class CamCheckError(ValueError):
    """Bad input to pytest-camcheck: the message says what is wrong and how to fix it.

    Example:
        >>> try:
        ...     raise CamCheckError("layer 'layer9' not found; use one of: layer4")
        ... except CamCheckError as err:
        ...     print(err)
        layer 'layer9' not found; use one of: layer4
    """


class InputError(CamCheckError):
    """The image or tensor handed over cannot be used."""


class MixedSizesError(InputError):
    """The images of one batch have different shapes after preprocessing (they can still go one size at a time)."""


class TargetError(CamCheckError):
    """The target class (index, name or callable) cannot be resolved."""


class LayerError(CamCheckError):
    """The target layer cannot be found or does not produce a usable map."""


class MethodError(CamCheckError):
    """The CAM method is unknown or does not apply to this model."""


class GeometryError(CamCheckError):
    """The preprocessing's geometry cannot be known, so the map could not be placed in image pixels."""


class RegionError(CamCheckError):
    """A region (box or mask) is empty, inverted, or outside the image."""


class UnseenRegionError(RegionError):
    """The region cannot be judged on the part of the image the model saw: the preprocessing cropped all of it away,
    or kept nothing but the region. ``reason`` says which, in a few words (a dataset check lists it as the reason
    for skipping)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class AnnotationError(CamCheckError):
    """An annotation file (COCO, Pascal VOC, YOLO, camcheck JSON) or the image it names cannot be used."""


class CamCheckWarning(UserWarning):
    """Something works but is probably not what was meant (e.g. a full-resolution photo fed to the model)."""


class FileRefused(CamCheckError, OSError):
    """A file cannot be written or read safely: its path is a symbolic link, its folder is read-only, or its
    contents would take too much memory. Also an ``OSError``, so code that tolerates unwritable files keeps
    tolerating it."""
