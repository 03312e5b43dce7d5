"""Chaos: extract, clean and train are SIGKILLed at random moments and run again.

After every kill, whatever looks finished must be finished (an output file or folder that
exists equals the uninterrupted run's; a run folder's metrics hold each epoch once, none
beyond its checkpoint); after the final re-run the result equals the uninterrupted run's,
with nothing duplicated or lost. Kill moments are drawn from a seeded generator over the
uninterrupted command's own duration (measured here, not asserted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from faceclean.cleaning.noise import inject_noise
from faceclean.data.synthetic import make_face_folder
from faceclean.demo import export_tiny_model

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "faceclean.cli"]


def _start(cmd):
    return subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _wait_started(p, started) -> None:
    """Wait until ``started(pid)`` (the command got past its imports into the work) or the
    process ends: kills are aimed at the work, not at Python's start-up."""
    while p.poll() is None and not started(p.pid):
        time.sleep(0.005)


def timed(cmd, started) -> float:
    """Run to completion (it must succeed); seconds from ``started`` to the end."""
    p = _start(cmd)
    _wait_started(p, started)
    t = time.perf_counter()
    _, err = p.communicate()
    assert p.returncode == 0, err.decode()[-2000:]
    return time.perf_counter() - t


def killed_after(cmd, started, delay: float) -> bool:
    """Start ``cmd`` and SIGKILL its whole process group ``delay`` seconds into its work;
    False if it ended (successfully) before that."""
    p = _start(cmd)
    _wait_started(p, started)
    try:
        _, err = p.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return True
    assert p.returncode == 0, err.decode()[-2000:]
    return False


def chaos(cmd, started, work_seconds: float, rng, check, kills: int = 3) -> int:
    """Kill ``cmd`` up to ``kills`` times at random moments of its work, calling
    ``check()`` after each; then run it to completion. Returns how many kills landed."""
    landed = 0
    for _ in range(kills):
        if not killed_after(cmd, started, float(rng.uniform(0.0, 1.05 * work_seconds))):
            break
        landed += 1
        check()
    timed(cmd, started)
    return landed


def holds_lock(output: Path):
    """started(pid): the process holds the output's lock (taken after start-up, before
    any work)."""
    lock = output.with_name(f".{output.name}.lock")

    def started(pid: int) -> bool:
        try:
            return lock.read_text().strip() == str(pid)
        except OSError:
            return False

    return started


def has_parts(partial: Path, k: int):
    """started(pid) for extract: at least ``k`` finished chunks in its resumable folder."""

    def started(pid: int) -> bool:
        return len(list(partial.glob("part-*.parquet"))) >= k

    return started


def writes_chunks(partial: Path):
    """started(pid) for extract: its resumable folder was touched after the start."""
    t0 = time.time()

    def started(pid: int) -> bool:
        try:
            return any(f.stat().st_mtime >= t0 for f in [partial, *partial.iterdir()])
        except OSError:
            return False

    return started


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    root = tmp_path_factory.mktemp("chaos")
    faces = make_face_folder(root / "faces", identities=10, per_identity=8, size=112, seed=5)
    model = export_tiny_model(root / "tiny.onnx", seed=1)
    return root, faces, model


def tables_equal(a: Path, b: Path) -> bool:
    return pq.read_table(a).equals(pq.read_table(b))


def test_extract_and_clean_survive_random_kills(material):
    root, faces, model = material
    rng = np.random.default_rng(11)
    extract = [*CLI, "extract", str(faces), "-m", str(model), "--chunk-size", "4"]
    extract += ["--batch-size", "2", "--workers", "1"]
    seconds = timed(
        [*extract, "-o", str(root / "ref.parquet")], writes_chunks(root / "ref.parquet.partial")
    )
    out = root / "emb.parquet"

    def extract_check():
        # the output appears only when complete: if it is there, it is the whole result
        assert not out.exists() or tables_equal(out, root / "ref.parquet")

    # Extract's moments are counted in chunks: kill once k of its 20 chunks are on disk
    # (k drawn at random, more than the last run left), a few milliseconds later.
    partial, landed, cmd = root / "emb.parquet.partial", 0, [*extract, "-o", str(out)]
    for k in sorted(rng.choice(np.arange(1, 20), 3, replace=False)):
        if not killed_after(cmd, has_parts(partial, int(k)), float(rng.uniform(0, 0.02))):
            break
        landed += 1
        extract_check()
        if out.exists():  # killed after the output was complete: nothing left to resume
            break
        assert len(list(partial.glob("part-*.parquet"))) >= k  # kept for the re-run
    if not out.exists():
        timed(cmd, writes_chunks(partial))
    table = pq.read_table(out)
    assert tables_equal(out, root / "ref.parquet"), f"differs after {landed} kills"
    assert len(set(table["path"].to_pylist())) == table.num_rows == 80

    ns = inject_noise(table, flip=0.1, outlier=0.1, split=0.1, seed=3)
    pq.write_table(ns.table, root / "noisy.parquet")
    clean = [*CLI, "clean", str(root / "noisy.parquet"), "--format", "lst", "--overwrite"]
    seconds = timed([*clean, "-o", str(root / "ref-clean")], holds_lock(root / "ref-clean"))
    ref = root / "ref-clean"
    names = sorted(p.name for p in ref.iterdir())
    out = root / "cleaned"

    def clean_check():
        if out.exists():  # swapped in only when complete: never a partial folder
            assert sorted(p.name for p in out.iterdir()) == names
            assert (out / "clean.lst").read_bytes() == (ref / "clean.lst").read_bytes()

    landed = chaos([*clean, "-o", str(out)], holds_lock(out), seconds, rng, clean_check, kills=4)
    assert sorted(p.name for p in out.iterdir()) == names
    for name in ("scores.parquet", "merges.parquet", "pairs.parquet"):
        assert tables_equal(out / name, ref / name), (name, landed)
    assert (out / "clean.lst").read_bytes() == (ref / "clean.lst").read_bytes()
    s, r = (
        json.loads((out / "summary.json").read_text()),
        json.loads((ref / "summary.json").read_text()),
    )
    assert s == r
    lines = (out / "clean.lst").read_text().splitlines()
    assert len(lines) == len(set(lines)) == s["clean_rows"]  # nothing duplicated or lost
    # no temporary or lock of the killed runs is left beside the output
    assert not [p.name for p in root.iterdir() if p.name.startswith(".cleaned")]


def test_train_survives_random_kills(material):
    root, faces, _ = material
    rng = np.random.default_rng(12)
    train = [*CLI, "train", str(faces), "--input-size", "32", "--embedding-size", "16"]
    train += ["--width", "0.25", "--depth", "0.5", "--loss", "softmax", "--epochs", "4"]
    train += ["--batch-size", "8", "--lr", "0.05", "--workers", "0"]
    ref, run = root / "ref-run", root / "run"
    seconds = timed([*train, "-o", str(ref)], holds_lock(ref))

    def metrics(folder):
        path = folder / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def train_check():
        epochs = [m["epoch"] for m in metrics(run)]
        assert epochs == list(range(1, len(epochs) + 1))  # each epoch once, in order
        if (run / "checkpoint.pt").exists():
            done = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
            # a line may lead its checkpoint by one epoch (the kill came in between), no more
            assert done <= len(epochs) <= done + 1

    landed = chaos([*train, "-o", str(run)], holds_lock(run), seconds, rng, train_check, kills=4)
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in ref.iterdir())
    want, got = metrics(ref), metrics(run)
    assert [m["epoch"] for m in got] == [1, 2, 3, 4], landed
    assert [(m["step"], m["loss"]) for m in got] == [(m["step"], m["loss"]) for m in want]
    a = torch.load(ref / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), landed
