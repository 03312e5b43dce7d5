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

from faceclean.onnx_model import METADATA_KEY
from faceclean.store import atomic_path
from faceclean.train import load_run, spec_for


def export_onnx(run_dir: str | Path, output: str | Path, opset: int = 17) -> Path:
    """Write the run's backbone as ONNX (atomically) and return the path."""
    model, cfg = load_run(run_dir)
    size = cfg.input_size
    output = Path(output)
    with atomic_path(output) as tmp:
        torch.onnx.export(
            model,
            (torch.zeros(2, 3, size, size),),
            str(tmp),
            input_names=["data"],
            output_names=["embedding"],
            dynamic_axes={"data": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(spec_for(cfg).to_dict()))
        proto.metadata_props.add(
            key="faceclean.train_config", value=(Path(run_dir) / "config.json").read_text()
        )
        onnx.save(proto, str(tmp))
    return output
