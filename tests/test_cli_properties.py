"""Property tests over the command line: whatever a user types into a numeric option, and
whatever a store holds, a verb either exits 0 with a result that passes its own invariants or
exits 2 with one line and no traceback -- never anything else.

The cleaning verbs run for real on a small store. The verbs whose run is long (train,
extract, align, search, demo, review, eval, export) are checked through option parsing and
their input checks: they are given a missing input, so every value either is refused as an
option error or reaches the verb's own one-line refusal of the input.
"""

from __future__ import annotations

import math
import re
import warnings

import click
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceclean.cli import main
from faceclean.data.store import embedding_schema, embedding_table
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store

EDGE = [
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "1",
    "2",
    "0.5",
    "1e308",
    "-1e308",
    "1e-320",
    "auto",
    "off",
]
HUGE = [str(2**31), str(2**63), str(10**30), "-" + str(10**30)]
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same cases every run: CI never fails on a new draw
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def numeric_options(verb: str) -> list[str]:
    """The long names of every option of ``verb`` that takes a number."""
    out = []
    for p in main.commands[verb].params:
        if isinstance(p, click.Option) and not p.is_flag:
            if isinstance(p.type, click.IntRange | click.FloatRange) or p.type in (
                click.INT,
                click.FLOAT,
            ):
                out.append(max(p.opts, key=len))
    return out


def value() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(EDGE + HUGE),
        st.integers(-(10**6), 10**6).map(str),
        st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    )


def options_for(verb: str) -> st.SearchStrategy[list[str]]:
    names = numeric_options(verb)
    return st.dictionaries(st.sampled_from(names), value(), max_size=3).map(
        lambda d: [x for k, v in d.items() for x in (k, v)]
    )


def invoke(args: list[str]):
    """Run the CLI with NumPy's RuntimeWarnings as errors: a raw "overflow encountered" line
    printed to the user is a defect too (it then shows as exit 1 and fails the test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return CliRunner().invoke(main, args)


# faceclean.progress's line when stderr is not a terminal: "filter: 48/48 rows (100.0%) ..."
PROGRESS_LINE = re.compile(r"^[\w :-]+: [\d,]+/[\d,]+ \w+ \([\d.]+%\)  ")


def check_outcome(result, verb: str) -> bool:
    """True when the verb succeeded; asserts the only other outcome is one clean line."""
    text = result.output
    assert "Traceback" not in text, text
    assert result.exit_code in (0, 2), (verb, result.exit_code, text, result.exception)
    if result.exit_code == 2:  # one error line, besides any progress lines of a log
        lines = [x for x in text.strip().splitlines() if not PROGRESS_LINE.match(x)]
        assert len(lines) == 1, text
    return result.exit_code == 0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    x, y = clustered_embeddings(8, 6, dim=16, seed=0)
    return write_embedding_store(tmp_path_factory.mktemp("p") / "emb.parquet", x, y)


def _tau(args: list[str], name: str, default: float) -> float:
    return float(args[args.index(name) + 1]) if name in args else default


@SETTINGS
@given(args=options_for("filter"))
def test_filter_options(store, tmp_path_factory, args):
    out = tmp_path_factory.mktemp("f") / "s.parquet"
    r = invoke(["filter", str(store), "-o", str(out), *args])
    if check_outcome(r, "filter"):
        t = pq.read_table(out)
        assert t.num_rows == 48
        d, keep = t["discriminability"].to_numpy(), t["keep"].to_numpy()
        if "--tau-intra" in args and args[args.index("--tau-intra") + 1] == "auto":
            return  # the threshold chosen is checked in tests/test_thresholds.py
        tau = _tau(args, "--tau-intra", 0.3)
        assert math.isfinite(tau)
        assert not (keep & (d < tau)).any()  # nothing below tau is kept
        if not {"--min-cos-pos", "--min-norm"} & set(args):
            assert (keep == ~(d < tau)).all()  # without floors, exactly D >= tau (NaN kept)


@SETTINGS
@given(args=options_for("merge"))
def test_merge_options(store, tmp_path_factory, args):
    out = tmp_path_factory.mktemp("m") / "m.parquet"
    r = invoke(["merge", str(store), "-o", str(out), *args])
    if check_outcome(r, "merge"):
        t = pq.read_table(out)
        assert sorted(t["label"].to_pylist()) == sorted(set(t["label"].to_pylist()))
        assert set(t["merged_label"].to_pylist()) <= set(t["label"].to_pylist())


@SETTINGS
@given(args=options_for("clean"))
def test_clean_options(store, tmp_path_factory, args):
    out = tmp_path_factory.mktemp("c") / "c"
    r = invoke(["clean", str(store), "-o", str(out), *args])
    if check_outcome(r, "clean"):
        t = pq.read_table(out / "clean.parquet")
        labels = np.unique(t["label"].to_numpy())
        assert (labels == np.arange(len(labels))).all()  # contiguous from 0
        assert t.num_rows <= 48 and len(set(t["path"].to_pylist())) == t.num_rows


@SETTINGS
@given(args=options_for("inject-noise"))
def test_inject_noise_options(store, tmp_path_factory, args):
    out = tmp_path_factory.mktemp("n") / "noisy.parquet"
    r = invoke(["inject-noise", str(store), "-o", str(out), *args])
    if check_outcome(r, "inject-noise"):
        t = pq.read_table(out)
        e = np.stack(t["embedding"].to_numpy(zero_copy_only=False))
        assert np.isfinite(e).all() and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-3)


@SETTINGS
@given(args=options_for("overlap"))
def test_overlap_options(store, tmp_path_factory, args):
    out = tmp_path_factory.mktemp("o") / "ov"
    r = invoke(["overlap", str(store), str(store), "-o", str(out), *args])
    if check_outcome(r, "overlap"):
        assert (out / "exclude.parquet").is_file()


SLOW_VERBS = {
    "train": ["{missing}"],
    "extract": ["{missing}", "-m", "{missing}", "-o", "{out}"],
    "align": ["{missing}", "-o", "{out}", "--detector", "{missing}"],
    "search": ["{missing}", "--val", "{missing}", "-o", "{out}"],
    "eval": ["{missing}"],
    "review": ["{missing}"],
    "demo": ["-o", "{missing}/x", "--model", "{missing}"],
}


@pytest.mark.parametrize("verb", sorted(SLOW_VERBS))
def test_long_verbs_parse_every_number_to_an_answer(verb, tmp_path):
    """No value reaches a traceback before the run starts."""
    base = [a.format(missing=tmp_path / "missing", out=tmp_path / "out") for a in SLOW_VERBS[verb]]

    @SETTINGS
    @given(args=options_for(verb))
    def check(args):
        r = invoke([verb, *base, *args])
        assert not check_outcome(r, verb), f"{verb} ran with a missing input: {r.output}"

    check()


def _store_rows(draw_rows, dim: int) -> pa.Table:
    schema = embedding_schema(dim)
    paths, labels, names, emb = zip(*draw_rows, strict=True)
    return embedding_table(
        list(paths),
        np.asarray(labels, np.int64),
        list(names),
        np.asarray(emb, np.float32),
        np.ones(len(paths), np.float32),
        schema,
    )


@st.composite
def stores(draw):
    """A small store, possibly hostile: NaN, infinite or zero embeddings, negative labels,
    repeated paths, one class only, a label under two names."""
    dim = draw(st.integers(2, 8))
    classes = draw(st.integers(1, 4))
    per = draw(st.integers(1, 4))
    x, y = clustered_embeddings(classes, per, dim=dim, seed=draw(st.integers(0, 5)))
    rows = [[f"img/{i}.jpg", int(y[i]), f"id{y[i]}", x[i].copy()] for i in range(len(y))]
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(rows) - 1))
        kind = draw(st.sampled_from(["nan", "inf", "zero", "neg-label", "dup-path", "rename"]))
        if kind == "nan":
            rows[i][3][0] = np.nan
        elif kind == "inf":
            rows[i][3][0] = np.inf
        elif kind == "zero":
            rows[i][3][:] = 0
        elif kind == "neg-label":
            rows[i][1] = -1
        elif kind == "dup-path":
            rows[i][0] = rows[0][0]
        else:
            rows[i][2] = "someone else"
    return rows, dim


@SETTINGS
@given(data=stores())
def test_filter_and_clean_on_any_store(tmp_path_factory, data):
    rows, dim = data
    folder = tmp_path_factory.mktemp("s")
    path = folder / "emb.parquet"
    pq.write_table(_store_rows(rows, dim), path)
    r = invoke(["filter", str(path), "-o", str(folder / "s.parquet")])
    if check_outcome(r, "filter"):
        t = pq.read_table(folder / "s.parquet")
        assert t.num_rows == len(rows)
        labels = t["label"].to_numpy()
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        singleton = counts[inverse] == 1  # stated: NaN scores, kept
        assert (np.isnan(t["cos_pos"].to_numpy()) == singleton).all()
        assert t["keep"].to_numpy()[singleton].all()
    r = invoke(["clean", str(path), "-o", str(folder / "c")])
    if check_outcome(r, "clean"):
        t = pq.read_table(folder / "c" / "clean.parquet")
        assert t.num_rows <= len(rows)
