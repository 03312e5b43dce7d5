"""How long a page of `faceclean review` takes to load, for a million-row clean and a small one.

In one run, for a synthetic clean folder of --rows rows (and, as the baseline, one of
--small rows, built the same way):
  * the one-off cost: building the review index (``CLEAN_DIR/.review``; its peak memory
    in a process of its own, against a process that only reads the scores table whole),
    then starting the app on an existing index (it reads the per-class strips,
    O(classes));
  * a page's HTML over HTTP (the first, a middle and the last page of the removals and
    the borderline queues; the first request of a page reads its row group, the repeat is
    cached), median of --repeats;
  * every thumbnail on a removals page: made from a generated JPEG (cold) and from the
    cache (warm), fetched one after the other; then a whole page as a browser loads it,
    the HTML and then its thumbnails six at a time (cold: never shown before; warm);
  * the naive alternative the index avoids: read and sort the scores table per request.
The images exist only for the faces the measured pages show: they are generated (112x112
JPEGs) after the page is first read, before the thumbnails are timed.

    python benchmarks/bench_review.py [--rows 1000000] [--small 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from faceclean.review.index import build_index
from faceclean.review.pages import PER_PAGE
from faceclean.review.server import ReviewApp, make_server

PER_CLASS = 50
TAU = 0.8  # about a third of the rows removed: long queues


def write_clean(folder: Path, rows: int, seed: int = 0) -> Path:
    """A synthetic `faceclean clean` folder: scores, merges, pairs, summary."""
    rng = np.random.default_rng(seed)
    classes = max(rows // PER_CLASS, 2)
    labels = np.repeat(np.arange(classes), PER_CLASS)[:rows]
    j = np.tile(np.arange(PER_CLASS), classes)[:rows]
    cos_pos = np.clip(rng.normal(0.55, 0.15, rows), -1, 1).astype(np.float32)
    cos_neg = rng.uniform(0.05, 0.9, rows).astype(np.float32)
    d = cos_pos / cos_neg
    neg = (labels + 1 + rng.integers(0, classes - 1, rows)) % classes
    paths = pa.array([f"id_{k:07d}/{i:03d}.jpg" for k, i in zip(labels, j, strict=True)])
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "path": paths,
                "label": labels,
                "identity": pa.array([f"id_{k:07d}" for k in labels]),
                "cos_pos": cos_pos,
                "hardest_negative": neg,
                "cos_neg": cos_neg,
                "discriminability": d,
                "keep": d >= TAU,
            }
        ),
        folder / "scores.parquet",
    )
    merged = np.arange(classes)
    a = np.arange(0, classes - 1, 100)  # 1% of the classes in pairs
    merged[a + 1] = a
    size = np.where(np.isin(np.arange(classes), np.r_[a, a + 1]), 2, 1)
    pq.write_table(
        pa.table({"label": np.arange(classes), "merged_label": merged, "group_size": size}),
        folder / "merges.parquet",
    )
    cos = rng.uniform(0.62, 0.8, len(a)).astype(np.float32)
    pq.write_table(
        pa.table({"label_a": a, "label_b": a + 1, "cosine": cos, "merged": np.ones(len(a), bool)}),
        folder / "pairs.parquet",
    )
    data = folder.parent / f"{folder.name}_images"
    data.mkdir()
    summary = {
        "format": 1,
        "embeddings": [],
        "dataset": str(data),
        "tau_intra": TAU,
        "tau_inter": 0.62,
        "samples": rows,
        "kept": int((d >= TAU).sum()),
        "dropped": int((d < TAU).sum()),
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return data


def peak_rss(code: str) -> float:
    """Peak resident memory (MB) of a fresh Python process running ``code``."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) forking parent.
    script = (
        f"{code}\nfrom pathlib import Path\n"
        "print([x for x in Path('/proc/self/status').read_text().splitlines() "
        "if x.startswith('VmHWM')][0].split()[1])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return int(done.stdout.split()[-1]) / 1024


def get(url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t, body


def generate_images(data: Path, html: str, rng) -> list[str]:
    """Write a JPEG for every thumbnail the page shows; return their URLs."""
    urls = sorted(set(re.findall(r"src='(/thumb\?p=[^']+)'", html)))
    for u in urls:
        p = data / unquote(u.split("=", 1)[1])
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            img = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
            Image.fromarray(img).save(p, quality=90)
    return urls


def thumbnails(base: str, data: Path, html: str, rng, repeats: int) -> dict:
    """Every thumbnail of a page fetched one after the other, cold then warm."""
    urls = generate_images(data, html, rng)
    cold = sum(get(base + u)[0] for u in urls)
    warm = statistics.median(sum(get(base + u)[0] for u in urls) for _ in range(repeats))
    return {
        "thumbnails per page": len(urls),
        "thumbnails cold, one by one s": cold,
        "thumbnails warm, one by one s": warm,
        "one thumbnail cold ms": 1000 * cold / len(urls),
    }


def page_load(base: str, path: str, data: Path, html: bytes, rng, repeats: int) -> dict:
    """A whole page as a browser loads it: the HTML, then its thumbnails six at a time
    (another page than the one above, so its thumbnails are still cold)."""
    urls = generate_images(data, html.decode(), rng)

    def load() -> float:
        t = time.perf_counter()
        get(base + path)
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda u: get(base + u), urls))
        return time.perf_counter() - t

    cold = load()
    return {
        "page + thumbnails, 6 at a time, cold s": cold,
        "page + thumbnails, 6 at a time, warm s": statistics.median(load() for _ in range(repeats)),
    }


def measure(root: Path, rows: int, repeats: int) -> dict:
    folder = root / f"clean_{rows}"
    data = write_clean(folder, rows)
    out: dict = {"rows": rows}
    t = time.perf_counter()
    build_index(folder)
    out["index build s"] = time.perf_counter() - t
    out["index build peak RSS MB (own process)"] = peak_rss(
        f"from faceclean.review.index import build_index; build_index({str(folder)!r})"
    )
    out["read whole scores, peak RSS MB (baseline)"] = peak_rss(
        f"import pyarrow.parquet as pq; pq.read_table({str(folder / 'scores.parquet')!r})"
    )
    t = time.perf_counter()
    app = ReviewApp(folder)
    out["app start s"] = time.perf_counter() - t
    out |= {k: app.index.counts[k] for k in ("removals", "borderline")}
    httpd = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    rng = np.random.default_rng(1)
    try:
        for kind in ("removals", "borderline"):
            last = (app.index.counts[kind] - 1) // PER_PAGE
            for name, page in (("first", 0), ("middle", last // 2), ("last", last)):
                url = f"{base}/q/{kind}?page={page}"
                cold, html = get(url)
                warm = statistics.median(get(url)[0] for _ in range(repeats))
                out[f"{kind} {name} page cold s"] = cold
                out[f"{kind} {name} page warm s"] = warm
                if kind == "removals" and name == "middle":
                    out |= thumbnails(base, data, html.decode(), rng, repeats)
                    _, other = get(f"{base}/q/{kind}?page={page + 1}")
                    out |= page_load(base, f"/q/{kind}?page={page + 1}", data, other, rng, repeats)
    finally:
        httpd.shutdown()
        httpd.server_close()
    t = time.perf_counter()
    scores = pq.read_table(folder / "scores.parquet")
    d = scores["discriminability"].to_numpy()
    order = np.argsort(np.abs(d - TAU))
    scores.take(order[:PER_PAGE])
    out["naive page s (read + sort per request)"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = measure(Path(tmp), args.small, args.repeats)
        big = measure(Path(tmp), args.rows, args.repeats)
    width = max(map(len, big))
    print(f"{'':{width}}  {args.small:>12,}  {args.rows:>12,}  ratio")
    for k in big:
        if k == "rows":
            continue
        a, b = small[k], big[k]
        ratio = f"{b / a:8.2f}" if isinstance(a, float) and a > 0 else ""
        fmt = "{:>12.4f}" if isinstance(a, float) else "{:>12,}"
        print(f"{k:{width}}  {fmt.format(a)}  {fmt.format(b)}  {ratio}")


if __name__ == "__main__":
    main()
