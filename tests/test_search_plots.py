"""The search plots are one set: a failed re-plot leaves the old set, a good one replaces it."""

from __future__ import annotations

import pytest

import faceclean.search.plots as plots
from faceclean.search.space import TOKENS


def _trials(n: int, acc: float) -> list[dict]:
    rows = []
    for i in range(n):
        row = {t: float(i % 3) for t in TOKENS}
        row.update(
            trial=i,
            step=i // 2,
            error=None,
            acc=acc + 0.01 * i,
            reward=acc + 0.01 * i,
            data_difficulty=0.5,
            loss_difficulty=0.1 * i,
            policy_entropy=1.0,
        )
        rows.append(row)
    return rows


def test_a_failed_replot_leaves_the_previous_set_and_no_temporaries(tmp_path, monkeypatch):
    first = plots.plot_search(_trials(6, 0.5), tmp_path)
    assert [p.name for p in first] == ["accuracy.png", "tokens.png", "difficulty.png"]
    before = {p.name: p.read_bytes() for p in first}

    real = plots._render
    calls = []

    def third_fails(fig, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(fig, path)

    monkeypatch.setattr(plots, "_render", third_fails)
    with pytest.raises(OSError):
        plots.plot_search(_trials(8, 0.2), tmp_path)
    assert {p.name: p.read_bytes() for p in first} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)

    monkeypatch.setattr(plots, "_render", real)
    plots.plot_search(_trials(8, 0.2), tmp_path)
    after = {p.name: p.read_bytes() for p in first}
    assert all(after[name] != before[name] for name in before)
