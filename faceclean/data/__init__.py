"""Stage 1, data in: images and their labels become L2-normalised embeddings in Parquet.

Modules: ``datasets`` (readers for an image folder, ``path label`` lists and InsightFace
``.rec``), ``recordio`` (MXNet RecordIO without MXNet), ``preprocess`` (decode, resize or
pad, normalise), ``onnx_model`` (the ONNX face model under onnxruntime), ``store`` (the
embedding Parquet contract, streamed by row group; atomic writes), ``synthetic``
(synthetic faces and embeddings for tests and the demo), ``extraction`` (``faceclean
extract``).

Exports: ``extract``, ``open_dataset``, ``iter_embeddings``, ``read_metadata``,
``FaceModel``, ``Preprocessing``, ``PRESETS``.
"""

from faceclean._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "extract": "extraction",
        "ExtractResult": "extraction",
        "open_dataset": "datasets",
        "iter_embeddings": "store",
        "read_metadata": "store",
        "FaceModel": "onnx_model",
        "Preprocessing": "preprocess",
        "PRESETS": "preprocess",
    },
)
__all__ = sorted(__dir__())
