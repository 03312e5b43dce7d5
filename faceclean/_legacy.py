"""The flat module paths of faceclean 0.1 (``faceclean.extract``, ``faceclean.store``, ...)
keep working for one release, with a DeprecationWarning, as aliases of their new homes in
the stage sub-packages. Remove in 0.3."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "datasets": "data.datasets",
    "recordio": "data.recordio",
    "preprocess": "data.preprocess",
    "onnx_model": "data.onnx_model",
    "store": "data.store",
    "synthetic": "data.synthetic",
    "extract": "data.extraction",
    "filter": "cleaning.filter",
    "merge": "cleaning.merge",
    "clean": "cleaning.clean",
    "faiss_backend": "cleaning.faiss_backend",
    "noise": "cleaning.noise",
    "evaluate": "cleaning.evaluate",
    "report": "cleaning.report",
    "backbones": "training.backbones",
    "losses": "training.losses",
    "train": "training.train",
    "verification": "training.verification",
    "export": "training.export",
    "teacher": "training.teacher",
    "search_space": "search.space",
    "controller": "search.controller",
    "search_methods": "search.methods",
    "trial": "search.trial",
    "search_plots": "search.plots",
    "surrogate": "search.surrogate",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "faceclean" or name not in MOVED:
            return None
        new = f"faceclean.{MOVED[name]}"
        warnings.warn(
            f"{fullname} moved to {new}; the old path goes away in faceclean 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
