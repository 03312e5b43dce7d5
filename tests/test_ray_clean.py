"""`filter`, `merge`, `clean --ray-address`: the class sums and the scoring as Ray tasks on a
local Ray of two workers give the one-process result. One Ray session for the module (its
start-up takes 10-30 s on a loaded machine).

The one-process product's last bits depend on OpenBLAS's thread count (measured: 1 and 2
threads differ by one float32 ulp in cos_neg on ~4% of rows); a Ray task runs one thread
(Ray sets OMP_NUM_THREADS to its one CPU), so the comparison is with one process at one
BLAS thread: there the result is deterministic, and equal bit for bit."""

import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from faceclean.cleaning.clean import clean
from faceclean.cleaning.filter import class_sums, filter_store
from faceclean.cleaning.noise import inject_noise
from faceclean.cleaning.ray_clean import pieces, stores_for
from faceclean.cli import main
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store
from faceclean.errors import FacecleanError


@pytest.fixture(scope="module")
def ray_two_workers():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    x, y = clustered_embeddings(50, 16, 32, spread=0.7, seed=5)
    path = write_embedding_store(tmp / "clean.parquet", x, y, row_group=100)
    ns = inject_noise(pq.read_table(path), flip=0.08, outlier=0.05, split=0.08, seed=6)
    pq.write_table(ns.table, tmp / "noisy.parquet", row_group_size=100)
    return tmp / "noisy.parquet"


def one_thread(fn, *args, **kwargs):
    with threadpool_limits(1):
        return fn(*args, **kwargs)


@pytest.mark.slow
def test_one_store_is_cut_into_row_group_chunks(store, ray_two_workers):
    cut = pieces([store], 2)
    assert len(cut) == 2 and cut[0][1:3] == (0, cut[1][1]) and cut[1][3] == cut[1][1] * 100
    assert len(stores_for(store, 64, "local").pieces) == 2  # one per worker
    sums, counts = stores_for(store, 64, "local").class_sums()
    local = class_sums(store, 64)
    assert np.array_equal(sums, local[0]) and np.array_equal(counts, local[1])


@pytest.mark.slow
@pytest.mark.parametrize("floors", [{}, {"min_cos_pos": 0.2, "tau_intra": "auto"}])
def test_filter_on_ray_equals_one_process(store, ray_two_workers, floors):
    kw = {"tau_intra": 0.6, **floors, "batch_rows": 64}
    local = one_thread(filter_store, store, **kw)
    ray = filter_store(store, **kw, ray_address="local")
    assert 0 < local.num_samples - local.num_kept < local.num_samples
    assert ray.scores.equals(local.scores)
    assert ray.thresholds.summary() == local.thresholds.summary()
    for name in ("class_sums", "kept_sums", "counts", "kept_counts"):
        assert np.array_equal(getattr(ray, name), getattr(local, name)), name


@pytest.mark.slow
def test_clean_on_ray_of_two_shards_equals_one_process(store, tmp_path, ray_two_workers):
    """Two stores given (extract's shards): one task each; every output the same."""
    table = pq.read_table(store)
    half = table.num_rows // 2 + 7  # a class cut across the two shards
    shards = [tmp_path / "s0.parquet", tmp_path / "s1.parquet"]
    pq.write_table(table.slice(0, half), shards[0], row_group_size=100)
    pq.write_table(table.slice(half), shards[1], row_group_size=100)
    kw = {"tau_intra": "auto", "tau_inter": 0.5, "batch_rows": 64, "dedup": 0.95}
    local = one_thread(clean, shards, tmp_path / "local", **kw)
    ray = clean(shards, tmp_path / "ray", **kw, ray_address="local")
    assert local.merge.groups and local.summary["dropped"] > 0  # something to compare
    for name in ("scores", "merges", "pairs", "clean"):
        a = pq.read_table(local.outputs[name])
        assert pq.read_table(ray.outputs[name]).equals(a), name
    assert pq.read_table(tmp_path / "ray" / "dedup.parquet").equals(
        pq.read_table(tmp_path / "local" / "dedup.parquet")
    )


@pytest.mark.slow
def test_cli_merge_on_ray_equals_one_process(store, tmp_path, ray_two_workers):
    out = {}
    for name, extra in (("local", []), ("ray", ["--ray-address", "local"])):
        args = ["merge", str(store), "--tau-inter", "0.5", "--tau-intra", "0.6"]
        r = one_thread(
            CliRunner().invoke, main, [*args, "-o", str(tmp_path / f"{name}.parquet"), *extra]
        )
        assert r.exit_code == 0, r.output
        out[name] = pq.read_table(tmp_path / f"{name}.parquet")
    assert out["ray"].equals(out["local"])


@pytest.mark.slow
def test_bad_row_on_a_worker_is_a_one_line_error(tmp_path, ray_two_workers):
    x, y = clustered_embeddings(4, 50, 8, seed=1)
    x[170, 3] = np.nan
    path = write_embedding_store(tmp_path / "bad.parquet", x, y, row_group=50)
    with pytest.raises(FacecleanError, match="row 170: embedding contains NaN") as e:
        filter_store(path, 0.3, batch_rows=16, ray_address="local")
    assert str(e.value.path) == str(path)  # named as in one process


def test_without_ray_the_option_says_how_to_install(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    for cmd in ("filter", "clean"):
        r = CliRunner().invoke(
            main, [cmd, str(store), "-o", str(tmp_path / cmd), "--ray-address", "local"]
        )
        assert r.exit_code == 2, r.output
        assert 'pip install "faceclean[ray]"' in r.output
        assert len(r.output.strip().splitlines()) == 1
        assert not (tmp_path / cmd).exists()  # nothing half-written
