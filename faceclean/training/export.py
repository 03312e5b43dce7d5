"""`faceclean export`: a trained run -> ONNX that `faceclean extract` reads without flags.

Input ``data`` float32 [N, 3, S, S] with a dynamic batch dimension, output ``embedding``
[N, d] (raw features; extract normalises them), and the training preprocessing recorded
in the model metadata under ``faceclean.preprocessing``. This closes the loop: a model
faceclean trains extracts the embeddings that clean the next set.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from faceclean.data.onnx_model import METADATA_KEY
from faceclean.data.preprocess import Preprocessing
from faceclean.data.store import atomic_path
from faceclean.outputs import writing
from faceclean.training.run import load_run, spec_for


def export_face_model(
    net: torch.nn.Module,
    output: str | Path,
    size: int,
    spec: Preprocessing | None,
    dynamic_batch: bool = True,
    metadata: dict[str, str] | None = None,
    opset: int = 17,
) -> Path:
    """Write ``net`` (input ``data`` [N,3,size,size], output ``embedding``) as ONNX,
    atomically, with ``spec`` recorded so that `extract` needs no flags. Without
    ``dynamic_batch`` the batch dimension is fixed to 1, like many models in the wild."""
    output = Path(output)
    axes = {"data": {0: "batch"}, "embedding": {0: "batch"}} if dynamic_batch else None
    with atomic_path(output) as tmp:
        torch.onnx.export(
            net.eval(),
            (torch.zeros(2 if dynamic_batch else 1, 3, size, size),),
            str(tmp),
            input_names=["data"],
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
        extra = dict(metadata or {})
        if spec is not None:
            extra[METADATA_KEY] = json.dumps(spec.to_dict())
        if extra:
            proto = onnx.load(str(tmp))
            for key, value in extra.items():
                proto.metadata_props.add(key=key, value=value)
            onnx.save(proto, str(tmp))
    return output


def export_onnx(
    run_dir: str | Path,
    output: str | Path,
    opset: int = 17,
    overwrite: bool = False,
    unfinished: bool = False,
) -> Path:
    """Write the run's backbone as ONNX (atomically) and return the path.

    The output is checked before any work (not an input, ``overwrite`` to replace it, a
    writable folder) and locked while written; a run whose training has not ended is
    refused unless ``unfinished`` (see :func:`faceclean.training.run.load_run`).
    """
    run_dir = Path(run_dir)
    inputs = [run_dir, run_dir / "checkpoint.pt", run_dir / "config.json"]
    with writing(output, overwrite=overwrite, inputs=inputs):
        model, cfg = load_run(run_dir, require_finished=not unfinished)
        config = (run_dir / "config.json").read_text()
        return export_face_model(
            model,
            output,
            cfg.input_size,
            spec_for(cfg),
            metadata={"faceclean.train_config": config},
            opset=opset,
        )
