"""`faceclean doctor` on this (CPU) machine, and its checks exercised CPU against CPU."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from faceclean.cleaning.device_check import check_filter
from faceclean.cli import doctor as doc
from faceclean.cli import main
from faceclean.data.device_check import agreement, check_extract
from faceclean.training.device_check import check_train


def test_doctor_on_cpu_says_what_it_could_not_check(monkeypatch):
    monkeypatch.setattr(doc, "_devices", lambda: ({}, {"torch": 0, "ort": False, "faiss": 0}))
    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    for name in ("faceclean", "torch", "onnxruntime", "faiss"):
        assert name in res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("verdict: CPU only; could not check the GPU: extract")
    assert "torch sees no CUDA GPU" in res.output


@pytest.mark.parametrize("name", ["extract", "filter", "train"])
def test_each_check_agrees_with_itself_on_cpu(tmp_path, name):
    check = {"extract": check_extract, "filter": check_filter, "train": check_train}
    assert check[name](tmp_path, gpu="cpu").startswith("same: ")


def test_a_disagreement_is_the_verdict_and_exit_1(monkeypatch):
    monkeypatch.setattr(doc, "_devices", lambda: ({}, {"torch": 1, "ort": False, "faiss": 0}))
    monkeypatch.setattr(doc, "check_train", lambda tmp: agreement(False, "loss 1 vs 2"))
    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == "verdict: GPU and CPU DIFFER on train step"
