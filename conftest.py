"""Shared test helpers of the whole repository (tests/, examples/, the package's doctests).

torch and torchvision are imported here, before any test runs: pytester's in-process sessions unload every
module first imported inside them, and torch's compiled operator libraries cannot be loaded twice in one process.
(The plugin itself no longer imports them, so a session that uses no camcheck fixture does not pay for them.)
"""

from __future__ import annotations

import torch  # noqa: F401
import torchvision  # noqa: F401
