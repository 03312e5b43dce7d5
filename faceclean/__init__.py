"""faceclean: clean face training sets; search cleaning, loss and backbone jointly.

One sub-package per pipeline stage, each importing only from the stages below it:
``data`` (images -> embeddings) <- ``cleaning`` (embeddings -> clean list) <- ``training``
(clean list -> model) <- ``search`` (the joint search over all three); ``demo`` and the
thin ``cli`` sit on top. ``errors`` and ``progress`` are shared by every stage.
"""

from faceclean import _legacy
from faceclean.errors import FacecleanError

__version__ = "0.1.0"

__all__ = ["FacecleanError", "__version__"]

_legacy.install()
