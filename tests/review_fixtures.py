"""A small clean folder with known removals, a merged group and a duplicate, over real image
files, for the review tests (``from review_fixtures import ...``)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
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


def fetch(url: str, data: bytes | None = None, headers: dict | None = None):
    """(status, body bytes, content type) of one request; HTTP errors are returned too."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type")


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


def make_overlap(root: Path) -> Path:
    """An evaluation store whose ``person_x`` is id_0002 (its faces, re-embedded with
    noise) and ``person_y`` a stranger, its images under their own root, and the
    `faceclean overlap` folder of the training store against it."""
    from faceclean.cleaning.overlap import find_overlap, write_overlap

    train = pq.read_table(root / "emb.parquet")
    rng = np.random.default_rng(5)
    emb = np.stack(train["embedding"].to_numpy(zero_copy_only=False))
    dim = emb.shape[1]
    same = emb[[i for i, p in enumerate(train["path"].to_pylist()) if p.startswith("id_0002")]]
    stranger = rng.standard_normal(dim)
    x = np.concatenate([same[:6], stranger + 0.3 * rng.standard_normal((6, dim))])
    x += 0.02 * rng.standard_normal(x.shape)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    images = make_face_folder(root.resolve() / "eval_images", identities=2, per_identity=6)
    names = {"id_0000": "person_x", "id_0001": "person_y"}
    for old, new in names.items():
        (images / old).rename(images / new)
    paths = [f"{n}/{j:02d}.png" for n in names.values() for j in range(6)]
    schema = embedding_schema(dim, metadata={"dataset": str(images)})
    table = embedding_table(
        paths,
        np.repeat([0, 1], 6),
        [p.split("/")[0] for p in paths],
        x.astype(np.float32),
        np.ones(12, np.float32),
        schema,
    )
    pq.write_table(table, root / "eval.parquet")
    result = find_overlap(root / "emb.parquet", root / "eval.parquet", 0.8, None, "cpu")
    return write_overlap(result, root / "overlap")
