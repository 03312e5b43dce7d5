"""`--tau-intra auto` and the junk floors (issue 20): chosen from the scores alone,
reported with the reason; a fixed tau_intra behaves as before."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import one_error_line, run

from faceclean.cleaning.clean import clean
from faceclean.cleaning.filter import filter_store
from faceclean.cleaning.noise import evaluate, inject_noise
from faceclean.cleaning.thresholds import Histogram, mixture_tau_intra, two_gaussians
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store
from faceclean.errors import FacecleanError


def _hist(values):
    h = Histogram((-1.0, 4.0))
    h.add(values)
    return h


def test_mixture_recovers_two_gaussians_and_its_crossing():
    rng = np.random.default_rng(0)
    noise, clean_ = rng.normal(0.3, 0.3, 2000), rng.normal(2.2, 0.5, 8000)
    weight, mean, sd = two_gaussians(_hist(np.concatenate([noise, clean_])))
    assert weight == pytest.approx([0.2, 0.8], abs=0.02)
    assert mean == pytest.approx([0.3, 2.2], abs=0.05)
    assert sd == pytest.approx([0.3, 0.5], abs=0.05)
    tau, why = mixture_tau_intra(_hist(np.concatenate([noise, clean_])))
    # Where 0.2 N(0.3, 0.3) = 0.8 N(2.2, 0.5), solved numerically: 1.0.
    x = np.linspace(0.3, 2.2, 100001)
    a = 0.2 * np.exp(-0.5 * ((x - 0.3) / 0.3) ** 2) / 0.3
    b = 0.8 * np.exp(-0.5 * ((x - 2.2) / 0.5) ** 2) / 0.5
    assert tau == pytest.approx(x[np.argmax(b >= a)], abs=0.03)
    assert "two-Gaussian mixture" in why


def test_mixture_without_a_noise_component_falls_back_to_the_d_equals_one_boundary():
    rng = np.random.default_rng(1)
    tau, why = mixture_tau_intra(_hist(rng.normal(2.2, 0.5, 5000)))
    assert tau == 1.0 and "D = 1 boundary" in why
    # A crossing above 1 (noise near 1.5) is capped: D > 1 is evidence for the label.
    tau, why = mixture_tau_intra(
        _hist(np.r_[rng.normal(1.4, 0.2, 2000), rng.normal(3.5, 0.2, 8000)])
    )
    assert tau == 1.0 and "capped" in why


@pytest.fixture
def noisy(tmp_path):
    x, y = clustered_embeddings(40, 15, 64, spread=0.9, seed=5)
    norm = np.random.default_rng(5).normal(17, 2, len(y))
    t = pq.read_table(write_embedding_store(tmp_path / "e.parquet", x, y))
    t = t.set_column(t.schema.get_field_index("norm"), "norm", pa.array(norm, pa.float32()))
    ns = inject_noise(t, 0, 0, 0, seed=6, lookalike=0.1, distractors=0.1)
    pq.write_table(ns.table, tmp_path / "n.parquet")
    return tmp_path / "n.parquet", ns.truth["noise"].to_numpy(zero_copy_only=False)


def test_auto_finds_lookalikes_and_distractors_and_says_why(noisy):
    path, noise = noisy
    auto = filter_store(path, "auto")
    m = evaluate(auto.scores["keep"].to_numpy(zero_copy_only=False), noise)
    paper = filter_store(path, 0.3)
    m_paper = evaluate(paper.scores["keep"].to_numpy(zero_copy_only=False), noise)
    assert m["removal_f1"] >= 0.9 and m["removal_f1"] > m_paper["removal_f1"] + 0.1
    th = auto.thresholds
    assert 0.3 < th.tau_intra <= 1.0 and "mixture" in th.reasons["tau_intra"]
    # The scores are the same; only the threshold differs.
    assert auto.scores["discriminability"].equals(paper.scores["discriminability"])
    d = auto.scores["discriminability"].to_numpy(zero_copy_only=False)
    assert (auto.scores["keep"].to_numpy(zero_copy_only=False) == ~(d < th.tau_intra)).all()


def test_a_fixed_tau_intra_applies_no_floor(noisy):
    path, _ = noisy
    r = filter_store(path, 0.3)
    d = r.scores["discriminability"].to_numpy(zero_copy_only=False)
    assert (r.scores["keep"].to_numpy(zero_copy_only=False) == ~(d < 0.3)).all()
    assert r.thresholds.min_cos_pos is None and r.thresholds.min_norm is None
    assert r.thresholds.reasons == {}


def test_floors_drop_low_norm_and_low_cos_pos_rows(noisy, tmp_path):
    path, _ = noisy
    t = pq.read_table(path)
    norm = t["norm"].to_numpy().copy()
    norm[[3, 50]] = 5.0  # far below N(17, 2): what non-face crops look like
    t = t.set_column(t.schema.get_field_index("norm"), "norm", pa.array(norm, pa.float32()))
    pq.write_table(t, tmp_path / "low.parquet")
    r = filter_store(tmp_path / "low.parquet", 0.0, min_norm="auto", min_cos_pos=0.2)
    keep = r.scores["keep"].to_numpy(zero_copy_only=False)
    cos_pos = r.scores["cos_pos"].to_numpy(zero_copy_only=False)
    assert 5.0 < r.thresholds.min_norm < 12.0
    assert not keep[3] and not keep[50]
    assert (keep == ((norm >= r.thresholds.min_norm) & ~(cos_pos < 0.2))).all()
    assert "far-out fence" in r.thresholds.reasons["min_norm"]


def test_norm_floor_needs_a_norm_column(tmp_path):
    x, y = clustered_embeddings(6, 5, 16, seed=0)
    t = pq.read_table(write_embedding_store(tmp_path / "full.parquet", x, y)).drop(["norm"])
    pq.write_table(t, path := tmp_path / "e.parquet")
    with pytest.raises(FacecleanError, match="e.parquet: has no norm column"):
        filter_store(path, 0.3, min_norm=10.0)
    r = filter_store(path, "auto", min_norm="auto")
    assert r.thresholds.min_norm is None
    assert "no norm column" in r.thresholds.reasons["min_norm"]
    with pytest.raises(FacecleanError, match="a number, 'auto' or 'off'"):
        filter_store(path, "bogus")


def test_clean_cli_auto_writes_the_choice_and_reason_into_the_summary(noisy, tmp_path):
    path, _ = noisy
    r = run("clean", path, "--tau-intra", "auto", "-o", tmp_path / "c")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert 0.3 < summary["tau_intra"] <= 1.0
    assert "mixture" in summary["tau_intra_auto"]
    assert summary["min_norm"] is not None and "min_norm_auto" in summary
    assert "tau_intra_auto" in r.output
    r = run("filter", path, "--tau-intra", "auto", "--min-norm", "off", "-o", tmp_path / "s")
    assert r.exit_code == 0 and "min_norm_auto" not in r.output
    one_error_line(run("filter", path, "--tau-intra", "often", "-o", tmp_path / "t"), "often")
    # The API: clean's summary holds the applied value, so a sweep or report reads a number.
    c = clean(path, tmp_path / "c2", "auto", 0.9)
    assert c.summary["tau_intra"] == c.filter.thresholds.tau_intra
