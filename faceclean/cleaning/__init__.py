"""Stage 2, cleaning: embeddings in, a clean training list out.

Modules: ``filter`` (class centroids and each sample's discriminability; ``faceclean
filter``), ``merge`` (classes whose centroids agree are merged; ``faceclean merge``),
``clean`` (filter then merge, and write the clean list; ``faceclean clean``),
``faiss_backend`` (the exact inner-product search: blocked BLAS or FAISS, CPU or GPU),
``dedup`` (near-duplicate images; ``clean --dedup``), ``overlap`` (training identities that
are evaluation identities; ``faceclean overlap``, ``clean --exclude``), ``noise`` (known
label noise in, precision/recall out; ``faceclean inject-noise``), ``evaluate``
(``faceclean evaluate-cleaning``), ``report`` and ``report_groups`` (``faceclean
report``).

Exports: ``filter_store``, ``FilterResult``, ``merge_classes``, ``MergeResult``,
``inject_noise``, ``write_report``; the pipeline itself is
``from faceclean.cleaning.clean import clean`` (not re-exported: it would hide its module).
"""

from faceclean._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "filter_store": "filter",
        "FilterResult": "filter",
        "merge_classes": "merge",
        "MergeResult": "merge",
        "inject_noise": "noise",
        "write_report": "report",
    },
)
__all__ = sorted(__dir__())
