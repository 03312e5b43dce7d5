"""faceclean: clean face training sets; search cleaning, loss and backbone jointly."""

from faceclean.errors import FacecleanError

__version__ = "0.1.0"

__all__ = ["FacecleanError", "__version__"]
