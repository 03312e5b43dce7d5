"""The `faceclean` command line: a thin layer over the Python API, one module per stage.

``common`` holds the group, error handling and shared options; ``extract``, ``clean``,
``noise``, ``train`` and ``search`` each register their stage's verbs on the group when imported.
"""

from faceclean.cli import (  # noqa: F401  (registers the verbs)
    clean,
    doctor,
    extract,
    noise,
    review,
    search,
    train,
)
from faceclean.cli.common import main

__all__ = ["main"]
