"""CPU against GPU on extract: the same tiny ONNX model through the whole extract path on
synthetic faces, on two devices (`faceclean doctor` runs it where onnxruntime has CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The GPU may sum in another order (and use other kernels), never give another answer; unit
# embeddings are O(1), so an absolute tolerance.
TOL_EMBEDDING = 1e-4


def agreement(ok: bool, detail: str) -> str:
    """The one-line outcome of a device check: "same: ..." or "DIFFERENT: ..."."""
    return ("same: " if ok else "DIFFERENT: ") + detail


def tiny_onnx_model(path: Path) -> Path:
    """Conv 3->8 (stride 4) + ReLU + global pool + linear 8->16, random weights, dynamic
    batch, the insightface preprocessing recorded (so extract needs no flags)."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from faceclean.data.onnx_model import METADATA_KEY
    from faceclean.data.preprocess import PRESETS, Preprocessing

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 5, 5)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((8, 16)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], strides=[4, 4], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "doctor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = Preprocessing(**PRESETS["insightface"], height=112, width=112)
    helper.set_model_props(model, {METADATA_KEY: json.dumps(spec.to_dict())})
    onnx.save(model, str(path))
    return path


def check_extract(tmp: Path, gpu: str = "cuda") -> str:
    """Extract synthetic faces in ``tmp`` on the CPU and on ``gpu``; "same: ..." when every
    embedding agrees within :data:`TOL_EMBEDDING`, else "DIFFERENT: ..."."""
    from faceclean.data.extraction import extract
    from faceclean.data.synthetic import make_face_folder

    faces = make_face_folder(tmp / "faces", identities=4, per_identity=4, seed=1)
    model = tiny_onnx_model(tmp / "tiny.onnx")
    cpu = extract(faces, model, device="cpu").table
    gpu = extract(faces, model, device=gpu).table
    a = np.stack(cpu["embedding"].to_numpy(zero_copy_only=False))
    b = np.stack(gpu["embedding"].to_numpy(zero_copy_only=False))
    diff = float(np.abs(a - b).max())
    ok = diff <= TOL_EMBEDDING and cpu["path"].equals(gpu["path"])
    return agreement(ok, f"max |embedding CPU - GPU| {diff:.2e} over {len(a)} images")
