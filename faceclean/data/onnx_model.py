"""An ONNX face model behind one call: a float32 NCHW batch in, raw features out.

Models in the wild often have a batch dimension fixed to 1. :class:`FaceModel` then tries
to make the batch dimension symbolic (rewriting Reshape targets that hard-code it) and keeps
that rewrite only if it gives the same features as the original model run image by image;
otherwise it runs the original at its fixed batch size. ``batch_mode`` says which was used.

A made-dynamic model is not always faster: measured on the shared MobileFaceNet on 2 CPU
cores, batch 64 of the rewrite ran 18-42% slower than the model as shipped image by image.
:meth:`FaceModel.tune` therefore times every way to run the model on real images (as
shipped; made-dynamic or dynamic at a few batch sizes) and keeps the fastest
(``batch_choice``); `faceclean extract` does so on its first batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from faceclean.data.preprocess import Preprocessing
from faceclean.errors import FacecleanError

METADATA_KEY = "faceclean.preprocessing"
TUNE_BATCHES = (1, 8, 32, 64)  # model batch sizes tune() tries on a free batch dimension
_DEVICES = ("auto", "cpu", "cuda")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` ("auto" picks CUDA when present)."""
    if device not in _DEVICES:
        raise FacecleanError(f"device must be one of {_DEVICES}, not {device!r}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise FacecleanError(
            "--device cuda asked for, but onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install faceclean[gpu]"
        )
    if device != "cpu" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load_onnx(path: Path, what: str) -> onnx.ModelProto:
    """The ONNX model at ``path``; a one-line error naming the file when it is missing
    ("<what> file not found") or not ONNX."""
    if not path.is_file():
        raise FacecleanError(f"{what} file not found", path)
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf raises several types for garbage
        raise FacecleanError(f"not a valid ONNX model ({type(e).__name__})", path) from None


# Face models take crops of tens to a few hundred pixels a side; a side outside these
# bounds is a wrong or crafted model, and feeding it would allocate gigabytes for a probe.
_MIN_SIDE, _MAX_SIDE = 8, 4096


def _recorded_preprocessing(text: str, path: Path) -> Preprocessing:
    """The preprocessing a faceclean export recorded in the model, checked: it is read
    from the file, which may declare anything."""
    try:
        spec = Preprocessing.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise FacecleanError(
            f"its recorded preprocessing ({METADATA_KEY}) is malformed: "
            f"{type(e).__name__} {str(e)[:80]}",
            path,
        ) from None
    if not all(math.isfinite(v) for v in (*spec.mean, *spec.std, spec.height, spec.width)):
        raise FacecleanError(
            f"its recorded preprocessing ({METADATA_KEY}) has a NaN or infinite value", path
        )
    return spec


def _dim(d) -> int | None:
    """A dimension's fixed size, or None when it is free (symbolic, unset, or written as
    -1 / 0 as paddle2onnx and some TensorFlow exports do)."""
    return d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None


def make_batch_dynamic(model: onnx.ModelProto, fixed: int) -> onnx.ModelProto:
    """A copy of ``model`` whose input/output batch dimension is symbolic.

    Reshape targets whose first entry equals the fixed batch size are set to 0 ("copy that
    dimension from the input"). The result must be verified against the original.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del m.graph.value_info[:]  # stale shapes with the old batch size
    shape_inputs = {n.input[1] for n in m.graph.node if n.op_type == "Reshape"}
    for init in m.graph.initializer:
        if init.name in shape_inputs:
            arr = numpy_helper.to_array(init)
            if arr.ndim == 1 and arr.size and arr[0] == fixed:
                arr = arr.copy()
                arr[0] = 0
                init.CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in m.graph.node:
        if node.op_type == "Constant" and node.output[0] in shape_inputs:
            for attr in node.attribute:
                if attr.name == "value":
                    arr = numpy_helper.to_array(attr.t)
                    if arr.ndim == 1 and arr.size and arr[0] == fixed:
                        arr = arr.copy()
                        arr[0] = 0
                        attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
    return m


class FaceModel:
    """A validated ONNX face model.

    Attributes:
        path, sha256: the model file and its hash.
        input_name: the model's single image input.
        layout: "NCHW", or "NHWC" (TensorFlow exports, [N,H,W,3]: fed a transposed batch).
        channels, height, width: the input's C x H x W (C is always 3).
        dim: embedding dimension.
        output_name: the output holding the embedding (the one [N, d>1] output, or the one
            asked for); norm_output: a [N, 1] output read as the feature norm (AdaFace
            exports (embedding, norm)), or None.
        batch_mode: "dynamic" (the model already had a free batch dimension), "made-dynamic"
            (faceclean rewrote it and checked the outputs are identical), or "fixed-N"
            (run in batches of exactly N, padding the last).
        preprocessing: the preprocessing recorded in the model's metadata, or None.
        providers: the onnxruntime execution providers in use.
        batch_choice: how the model runs after :meth:`tune` (e.g. "made-dynamic, batch 8"
            or "as shipped, batch 1"); None before.
        timings: :meth:`tune`'s (configuration, images per second), fastest first.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        output: str | None = None,
    ):
        self.path = Path(path)
        model = load_onnx(self.path, "model")
        if not model.graph.node:
            raise FacecleanError("not a valid ONNX model (empty graph)", self.path)
        self.sha256 = file_sha256(self.path)
        self.providers = providers_for(device)
        self._threads = threads
        initializers = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in initializers]
        if len(inputs) != 1:
            raise FacecleanError(
                f"model has {len(inputs)} inputs; faceclean needs one image input [N,3,H,W]",
                self.path,
            )
        inp = inputs[0]
        dims = [_dim(d) for d in inp.type.tensor_type.shape.dim]
        shape_text = "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"
        if len(dims) == 4 and dims[1] == 3:
            self.layout, (h, w) = "NCHW", dims[2:]
        elif len(dims) == 4 and dims[3] == 3:
            self.layout, (h, w) = "NHWC", dims[1:3]
        else:
            raise FacecleanError(
                f"model input '{inp.name}' has shape {shape_text}; faceclean needs [N,3,H,W] "
                "or [N,H,W,3] (3-channel images)",
                self.path,
            )
        if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise FacecleanError(f"model input '{inp.name}' is not float32", self.path)
        self.input_name = inp.name
        self.channels, self.height, self.width = 3, h, w
        meta = {p.key: p.value for p in model.metadata_props}
        self.preprocessing = (
            _recorded_preprocessing(meta[METADATA_KEY], self.path) if METADATA_KEY in meta else None
        )
        if self.height is None or self.width is None:
            if self.preprocessing is None:
                raise FacecleanError(
                    f"model input '{inp.name}' has a free size {shape_text} and no recorded "
                    "preprocessing; faceclean cannot tell what size to feed",
                    self.path,
                )
            self.height, self.width = self.preprocessing.height, self.preprocessing.width
        if not (_MIN_SIDE <= self.height <= _MAX_SIDE and _MIN_SIDE <= self.width <= _MAX_SIDE):
            raise FacecleanError(
                f"model input '{inp.name}' declares {self.height}x{self.width} pixels; faceclean "
                f"feeds face crops of {_MIN_SIDE} to {_MAX_SIDE} pixels a side",
                self.path,
            )
        self._setup_batching(model, dims[0])
        self._choose_outputs(output)

    def _session(self, model_bytes: bytes) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        if self._threads:
            opts.intra_op_num_threads = self._threads
        # Busy-waiting ORT threads would steal the cores the image decoders need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(model_bytes, opts, providers=self.providers)
        except Exception as e:
            msg = str(e).splitlines()[0][:200]
            raise FacecleanError(f"onnxruntime cannot load the model: {msg}", self.path) from None

    def _probe(self, n: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        return rng.standard_normal((n, 3, self.height, self.width)).astype(np.float32)

    def _feed(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.layout == "NHWC" else x

    def _setup_batching(self, model: onnx.ModelProto, batch: int | None) -> None:
        original = self._session(model.SerializeToString())
        self.fixed_batch = batch
        self._sess = original
        self._shipped, self._shipped_batch, self._dynamic = original, batch, None
        self.run_batch: int | None = None  # a free batch dimension fed this many at a time
        self.batch_choice: str | None = None
        self.timings: list[tuple[str, float]] = []
        if batch is None:
            self.batch_mode = "dynamic"
        else:
            self.batch_mode = f"fixed-{batch}"
            try:
                dynamic = self._session(make_batch_dynamic(model, batch).SerializeToString())
                probe = self._feed(self._probe(3 * batch + 1))
                want = self._run_fixed(original, probe)
                got = dynamic.run(None, {self.input_name: probe})
                same = len(got) == len(want) and all(
                    g.shape == w.shape
                    and np.abs(g - w).max(initial=0) <= 1e-4 * max(1.0, float(np.abs(w).max()))
                    for g, w in zip(got, want, strict=False)
                )
                if same:
                    self._sess, self.fixed_batch, self.batch_mode = dynamic, None, "made-dynamic"
                    self._dynamic = dynamic
            except (FacecleanError, Exception):
                pass  # the rewrite is an optimisation; the original model still works

    def _choose_outputs(self, asked: str | None) -> None:
        names = [o.name for o in self._sess.get_outputs()]
        try:
            outs = self._raw(self._probe(2))
        except Exception as e:  # the model's declarations do not match what it computes
            msg = " ".join(str(e).split())[:240] or type(e).__name__
            raise FacecleanError(
                f"onnxruntime cannot run the model on {self.height}x{self.width} images: {msg}",
                self.path,
            ) from None
        shapes = {n: tuple(np.asarray(o).shape) for n, o in zip(names, outs, strict=True)}
        listed = ", ".join(f"'{n}' {list(shapes[n])}" for n in names)
        self.norm_output = None
        if asked is not None:
            if asked not in names:
                msg = f"model has no output '{asked}' (outputs: {listed})"
                raise FacecleanError(msg, self.path)
            self.output_name = asked
        else:
            emb = [n for n in names if len(shapes[n]) == 2 and shapes[n][1] > 1]
            if len(emb) != 1:
                what = "no [N, dim] output" if not emb else "several [N, dim] outputs"
                raise FacecleanError(
                    f"model has {what} ({listed}); choose the embedding with --model-output NAME",
                    self.path,
                )
            self.output_name = emb[0]
        norms = [n for n in names if n != self.output_name and shapes[n] in ((2, 1), (2,))]
        if len(norms) == 1:
            self.norm_output = norms[0]
        self._index = names.index(self.output_name)
        self._norm_index = names.index(self.norm_output) if self.norm_output else None
        self.dim = int(self.run(self._probe(1)).shape[1])

    def _run_fixed(self, sess: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
        b = self.fixed_batch
        outs = []
        for s in range(0, len(x), b):
            part = x[s : s + b]
            n = len(part)
            if n < b:
                part = np.concatenate([part, np.zeros((b - n, *part.shape[1:]), part.dtype)])
            outs.append([o[:n] for o in sess.run(None, {self.input_name: part})])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]

    def _raw(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for an NCHW batch."""
        x = self._feed(x)
        if self.fixed_batch:
            return self._run_fixed(self._sess, x)
        if self.run_batch and len(x) > self.run_batch:
            b = self.run_batch
            parts = [
                self._sess.run(None, {self.input_name: x[s : s + b]}) for s in range(0, len(x), b)
            ]
            return [np.concatenate(p) for p in zip(*parts, strict=True)]
        return self._sess.run(None, {self.input_name: x})

    def configurations(self, most: int) -> list[tuple[str, object, int | None, int | None]]:
        """(name, session, fixed batch, run batch) of every way to run this model."""
        free = self._dynamic if self._dynamic is not None else None
        configs = []
        if self._shipped_batch is not None:
            configs.append(
                (
                    f"as shipped, batch {self._shipped_batch}",
                    self._shipped,
                    self._shipped_batch,
                    None,
                )
            )
        else:
            free = self._shipped
        kind = "made-dynamic" if self._dynamic is not None else "as shipped"
        if free is not None:
            for b in TUNE_BATCHES:
                if b <= most:
                    configs.append((f"{kind}, batch {b}", free, None, b))
        return configs

    def tune(self, x: np.ndarray, repeats: int = 2) -> list[tuple[str, float]]:
        """Time every configuration on the NCHW images ``x`` (real ones: the first batch of
        an extraction), ``repeats`` rounds in turn (the best of each counts, so a burst of
        load on a shared machine does not decide), and keep the fastest. Returns
        (configuration, images per second), fastest first; also in ``timings``."""
        configs = self.configurations(len(x))
        if len(configs) == 1:
            name, sess, fixed, run = configs[0]
            self.timings, self.batch_choice = [(name, float("nan"))], name
            self._sess, self.fixed_batch, self.run_batch = sess, fixed, run
            return self.timings
        best = {c[0]: 0.0 for c in configs}
        for _ in range(repeats):
            for name, sess, fixed, run in configs:
                self._sess, self.fixed_batch, self.run_batch = sess, fixed, run
                t = time.perf_counter()
                self._raw(x)
                best[name] = max(best[name], len(x) / (time.perf_counter() - t))
        self.timings = sorted(best.items(), key=lambda kv: -kv[1])
        chosen = next(c for c in configs if c[0] == self.timings[0][0])
        self.batch_choice = chosen[0]
        self._sess, self.fixed_batch, self.run_batch = chosen[1], chosen[2], chosen[3]
        return self.timings

    def run_with_norm(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(raw features float32 [N, dim], the model's own norm output [N] or None)."""
        outs = self._raw(x)
        out = np.asarray(outs[self._index], dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(x):
            raise FacecleanError(
                f"model output '{self.output_name}' has shape {list(out.shape)} for {len(x)} "
                "images; faceclean needs [N, dim] features",
                self.path,
            )
        if self._norm_index is None:
            return out, None
        return out, np.asarray(outs[self._norm_index], np.float32).reshape(len(x))

    def run(self, x: np.ndarray) -> np.ndarray:
        """Raw (not normalised) features, float32 [N, dim], for a float32 [N,3,H,W] batch."""
        return self.run_with_norm(x)[0]
