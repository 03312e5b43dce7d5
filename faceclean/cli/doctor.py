"""`faceclean doctor`: what this installation can run, and whether its GPU gives the CPU's answers.

Prints the versions of faceclean, torch, onnxruntime and faiss, the GPUs each library sees,
onnxruntime's execution providers, then (where a GPU is usable) runs three small equality
checks on synthetic data, CPU against GPU: ``extract`` (a tiny ONNX model on synthetic faces,
through the whole extract path), ``filter`` (discriminability scores) and one training step
(backbone + margin head + SGD). The last line is a verdict. On a CPU-only machine it says which
checks it could not run and why. Exit status 1 when a check disagrees, else 0.
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.markup import escape

from faceclean import __version__
from faceclean.cli.common import _summary_table, console, main

# Tolerances: the GPU may sum in another order (and use other kernels), never give another
# answer. Unit embeddings and cosines are O(1), so absolute tolerances.
TOL_EMBEDDING = 1e-4
TOL_SCORE = 1e-4
TOL_TRAIN = 1e-3  # relative, after one SGD step (cuDNN convolutions, TF32 off)


def _versions() -> dict:
    rows = {"faceclean": __version__, "python": platform.python_version()}
    for name in ("torch", "onnxruntime", "faiss", "numpy", "pyarrow"):
        try:
            module = __import__(name)
            rows[name] = getattr(module, "__version__", "installed (version unknown)")
        except Exception as e:  # an import that fails is exactly what doctor reports
            rows[name] = f"not importable ({type(e).__name__}: {str(e)[:60]})"
    return rows


def _devices() -> tuple[dict, dict]:
    """(rows to print, what is usable: {"torch": n, "ort": bool, "faiss": n})."""
    rows, usable = {}, {"torch": 0, "ort": False, "faiss": 0}
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = [torch.cuda.get_device_name(i) for i in range(n)]
        rows["torch GPUs"] = f"{n}" + (f": {', '.join(names)}" if names else "")
        usable["torch"] = n
    except Exception as e:
        rows["torch GPUs"] = f"unknown ({type(e).__name__})"
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        rows["onnxruntime providers"] = ", ".join(providers)
        usable["ort"] = "CUDAExecutionProvider" in providers
    except Exception as e:
        rows["onnxruntime providers"] = f"unknown ({type(e).__name__})"
    try:
        import faiss

        n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        rows["faiss GPUs"] = str(n)
        usable["faiss"] = n
    except Exception as e:
        rows["faiss GPUs"] = f"unknown ({type(e).__name__})"
    return rows, usable


def _tiny_model(path: Path) -> Path:
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


def _check_extract(tmp: Path, gpu: str = "cuda") -> str:
    from faceclean.data.extraction import extract
    from faceclean.data.synthetic import make_face_folder

    faces = make_face_folder(tmp / "faces", identities=4, per_identity=4, seed=1)
    model = _tiny_model(tmp / "tiny.onnx")
    cpu = extract(faces, model, device="cpu").table
    gpu = extract(faces, model, device=gpu).table
    a = np.stack(cpu["embedding"].to_numpy(zero_copy_only=False))
    b = np.stack(gpu["embedding"].to_numpy(zero_copy_only=False))
    diff = float(np.abs(a - b).max())
    ok = diff <= TOL_EMBEDDING and cpu["path"].equals(gpu["path"])
    return _result(ok, f"max |embedding CPU - GPU| {diff:.2e} over {len(a)} images")


def _check_filter(tmp: Path, gpu: str = "cuda") -> str:
    from faceclean.cleaning.filter import filter_store
    from faceclean.data.synthetic import clustered_embeddings, write_embedding_store

    x, y = clustered_embeddings(50, 8, 64, seed=2)
    write_embedding_store(tmp / "e.parquet", x, y)
    cpu = filter_store(tmp / "e.parquet", 0.3, device="cpu", backend="blas").scores
    gpu = filter_store(tmp / "e.parquet", 0.3, device=gpu, backend="faiss").scores
    a = cpu["discriminability"].to_numpy()
    b = gpu["discriminability"].to_numpy()
    diff = float(np.abs(a - b).max())
    flips = int((cpu["keep"].to_numpy() != gpu["keep"].to_numpy()).sum())
    near = int((np.abs(a - 0.3) <= TOL_SCORE).sum())
    ok = diff <= TOL_SCORE and flips <= near
    return _result(ok, f"max |D CPU - GPU| {diff:.2e} over {len(a)} samples, {flips} keep flips")


def _check_train(tmp: Path, gpu: str = "cuda") -> str:
    import torch

    from faceclean.training.backbones import create_backbone
    from faceclean.training.losses import create_head

    def step(device: str):
        torch.manual_seed(0)
        backbone = create_backbone("mobilefacenet", width=0.25, embedding_size=32, input_size=56)
        head = create_head("arcface", 32, 10)
        params = list(backbone.parameters()) + list(head.parameters())
        backbone.to(device).train()
        head.to(device)
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 3, 56, 56, generator=g).to(device)
        labels = torch.randint(0, 10, (16,), generator=g).to(device)
        loss = head(backbone(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        weights = torch.cat([p.detach().flatten().cpu() for p in params])
        return float(loss.detach()), weights

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    threads = torch.get_num_threads()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(1)  # a tiny step: many threads only contend (measured 0.06 s vs 5 s)
    try:
        loss_cpu, w_cpu = step("cpu")
        loss_gpu, w_gpu = step(gpu)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        torch.set_num_threads(threads)
    rel_loss = abs(loss_cpu - loss_gpu) / max(1e-12, abs(loss_cpu))
    rel_w = float((w_cpu - w_gpu).abs().max() / w_cpu.abs().max().clamp_min(1e-12))
    ok = rel_loss <= TOL_TRAIN and rel_w <= TOL_TRAIN
    return _result(ok, f"loss {loss_cpu:.5f} vs {loss_gpu:.5f}; max weight diff {rel_w:.1e} rel")


def _result(ok: bool, detail: str) -> str:
    return ("same: " if ok else "DIFFERENT: ") + detail


@main.command("doctor")
def doctor() -> None:
    """Versions, GPUs and execution providers; on a GPU, CPU-vs-GPU equality checks of
    extract, filter and a training step on small synthetic data, and a verdict."""
    rows = _versions()
    device_rows, usable = _devices()
    rows.update(device_rows)
    checks: list[tuple[str, str | None, Callable[..., str]]] = [
        (
            "extract",
            None if usable["ort"] else "onnxruntime has no CUDAExecutionProvider",
            _check_extract,
        ),
        ("filter", None if usable["faiss"] else "faiss sees no GPU", _check_filter),
        ("train step", None if usable["torch"] else "torch sees no CUDA GPU", _check_train),
    ]
    ran, different, skipped = [], [], []
    with tempfile.TemporaryDirectory(prefix="faceclean-doctor-") as tmp:
        for name, why_not, check in checks:
            if why_not:
                rows[f"check {name}"] = f"not run: {why_not}"
                skipped.append(f"{name} ({why_not})")
                continue
            sub = Path(tmp) / name.replace(" ", "_")
            sub.mkdir()
            try:
                outcome = check(sub)
            except Exception as e:  # a crash on the GPU is a finding, not a traceback
                outcome = _result(False, f"failed: {type(e).__name__}: {str(e)[:120]}")
            rows[f"check {name}"] = outcome
            ran.append(name)
            if not outcome.startswith("same"):
                different.append(name)
    _summary_table("faceclean doctor", rows)
    if different:
        verdict = f"verdict: GPU and CPU DIFFER on {', '.join(different)}"
    elif ran and not skipped:
        verdict = f"verdict: GPU and CPU agree on {', '.join(ran)}"
    elif ran:
        verdict = f"verdict: GPU and CPU agree on {', '.join(ran)}; not checked: " + "; ".join(
            skipped
        )
    else:
        verdict = "verdict: CPU only; could not check the GPU: " + "; ".join(skipped)
    console.print(escape(verdict), highlight=False, soft_wrap=True)
    if different:
        raise SystemExit(1)
