"""Stage 1, data in: images and their labels become L2-normalised embeddings in Parquet.

Modules: ``datasets`` (readers for an image folder, list files and InsightFace/im2rec
``.rec``), ``listfile`` (the three list layouts, detected or forced), ``recordio`` (MXNet
RecordIO without MXNet), ``recimages`` (images for a ``.rec`` training tools read),
``preprocess`` (decode, EXIF, resize or pad, normalise), ``onnx_model`` (the ONNX face
model under onnxruntime: batch, outputs, layout), ``embed`` (features -> unit
embeddings, shared by extract and evaluation), ``store`` (the embedding Parquet contract,
streamed by row group; atomic writes), ``partstore`` (extract's resumable chunks),
``parallel`` (in-order reads on a thread pool, a bounded window ahead),
``sharding`` (``extract --shard I/N``), ``extraction`` (``faceclean extract``),
``detectors`` (YuNet and SCRFD), ``align`` (``faceclean align``: ``align_photo`` one
photo, ``align_checks`` which detections may be kept and turned retries, ``align_warp``
the template and the warp, ``align_records`` the per-photo record, ``align_identity``
``--pick identity``), ``synthetic`` (synthetic faces and embeddings for tests and the
demo).

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
