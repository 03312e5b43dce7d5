"""A small clean folder with known removals, a merged group and a duplicate, over real image
files, for the review tests (``from review_fixtures import ...``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from faceclean.cleaning.clean import clean
from faceclean.data.store import embedding_schema, embedding_table
from faceclean.data.synthetic import make_face_folder

CLASSES, PER_CLASS = 6, 8
# id_0001/07 and id_0002/07 are filed under the wrong class (their embeddings are another
# class's); id_0004 and id_0005 are one person (one centre); id_0003/06 is a copy of /05.
MISFILED = {"id_0001/07.png": 3, "id_0002/07.png": 0}


def make_store(root: Path, dim: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """(image folder, embedding store) of the scenario above."""
    data = make_face_folder(root.resolve() / "data", identities=CLASSES, per_identity=PER_CLASS)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, dim))
    centres[5] = centres[4]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    paths, labels, emb = [], [], []
    for k in range(CLASSES):
        for j in range(PER_CLASS):
            p = f"id_{k:04d}/{j:02d}.png"
            x = centres[MISFILED.get(p, k)] + 0.5 * rng.standard_normal(dim) / np.sqrt(dim)
            paths.append(p)
            labels.append(k)
            emb.append(x / np.linalg.norm(x))
    emb = np.asarray(emb, np.float32)
    emb[paths.index("id_0003/06.png")] = emb[paths.index("id_0003/05.png")]
    schema = embedding_schema(dim, metadata={"dataset": str(data)})
    table = embedding_table(
        paths,
        np.asarray(labels),
        [p.split("/")[0] for p in paths],
        emb,
        np.linspace(10, 20, len(paths)).astype(np.float32),
        schema,
    )
    store = root / "emb.parquet"
    pq.write_table(table, store)
    return data, store


def make_clean(root: Path, **kw) -> Path:
    """The clean folder of :func:`make_store` at tau_intra 0.8, tau_inter 0.6, dedup 0.999."""
    _, store = make_store(root)
    out = root / "clean"
    args = {"tau_intra": 0.8, "tau_inter": 0.6, "dedup": 0.999} | kw
    clean(store, out, args.pop("tau_intra"), args.pop("tau_inter"), **args)
    return out


@contextmanager
def running(clean_dir: Path, data_root=None) -> Iterator[tuple[str, object]]:
    """A review server on a free port in a thread: yields (base URL, app)."""
    from faceclean.review.server import ReviewApp, make_server

    app = ReviewApp(clean_dir, data_root)
    httpd = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", app
    finally:
        httpd.shutdown()
        httpd.server_close()
