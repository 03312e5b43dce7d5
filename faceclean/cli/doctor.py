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

from rich.markup import escape

from faceclean import __version__
from faceclean.cleaning.device_check import check_filter
from faceclean.cli.common import _summary_table, console, main
from faceclean.data.device_check import agreement, check_extract
from faceclean.training.device_check import check_train


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
            check_extract,
        ),
        ("filter", None if usable["faiss"] else "faiss sees no GPU", check_filter),
        ("train step", None if usable["torch"] else "torch sees no CUDA GPU", check_train),
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
                outcome = agreement(False, f"failed: {type(e).__name__}: {str(e)[:120]}")
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
