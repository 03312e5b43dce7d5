"""The `faceclean` command line: a thin layer over the Python API, one module per stage.

``common`` holds the group, error handling and shared options; ``extract``, ``align``,
``clean``, ``noise``, ``review``, ``train`` and ``search`` each register their stage's verbs
on the group when imported.
"""

from faceclean.cli import (  # noqa: F401  (registers the verbs)
    align,
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
