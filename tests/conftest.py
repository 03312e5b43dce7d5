from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceclean.data.synthetic import make_face_folder
from faceclean.demo import export_tiny_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_MODEL = SHARED / "models" / "mobilefacenet-foamliu.onnx"
SHARED_ORL = SHARED / "data" / "orl_faces"

needs_shared = pytest.mark.skipif(
    not (SHARED_MODEL.is_file() and SHARED_ORL.is_dir()),
    reason=f"the shared face model and ORL images are not at {SHARED}",
)


@pytest.fixture(scope="session")
def faces(tmp_path_factory) -> Path:
    """8 synthetic identities x 6 images, 112x112 PNG."""
    return make_face_folder(tmp_path_factory.mktemp("faces"), identities=8, per_identity=6)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A dynamic-batch model that records the insightface preprocessing."""
    return export_tiny_model(tmp_path_factory.mktemp("m") / "tiny.onnx", seed=1)


@pytest.fixture(scope="session")
def fixed_model(tmp_path_factory) -> Path:
    """The same weights with the batch fixed to 1 and no recorded preprocessing."""
    path = tmp_path_factory.mktemp("m") / "tiny-fixed.onnx"
    return export_tiny_model(path, seed=1, dynamic_batch=False, preset=None)


def make_onnx(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    """Write a hand-built ONNX graph (for models torch would not export)."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def pooled_model(path: Path, channels: int = 3, size: int = 112, nan: bool = False) -> Path:
    """x [1,C,size,size] -> global average pool -> [1, C] features (optionally NaN)."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
    ]
    if nan:
        nodes.append(helper.make_node("Sqrt", ["f2"], ["y"]))
        nodes.insert(2, helper.make_node("Sub", ["f", "big"], ["f2"]))
        init = [numpy_helper.from_array(np.array([1e6], np.float32), "big")]
    else:
        nodes.append(helper.make_node("Identity", ["f"], ["y"]))
        init = []
    return make_onnx(
        path, nodes, [tensor("x", [1, channels, size, size])], [tensor("y", [1, channels])], init
    )
