"""The search's files: state as JSON + tensors (never an executed pickle), refused resumes,
torn logs, the output guard, parallel trials that do not hang and die with their parent."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from faceclean.errors import FacecleanError
from faceclean.search.face_search import prepare_output
from faceclean.search.search_loop import search
from faceclean.search.space import load_space
from faceclean.search.state import load_state
from faceclean.search.surrogate import SurrogateObjective
from faceclean.search.trial_log import read_log


def _strip(trials):
    return [json.dumps({k: v for k, v in t.items() if k != "wall_s"}) for t in trials]


@pytest.fixture
def space():
    return load_space()


def test_state_is_json_plus_tensors_and_loads_weights_only(tmp_path, space):
    obj = SurrogateObjective(space, seed=0)
    r = search(space, obj, tmp_path / "s", steps=3, batch=4, warmup_trials=4)
    blob = torch.load(tmp_path / "s" / "state.pt", weights_only=True)
    meta = json.loads(blob["meta"])
    assert meta["step"] == 3 and meta["batch"] == 4 and meta["pending"] is None
    # One entropy per step: the first step is the uniform warm-up.
    assert len(meta["entropy"]) == 3 == len(r.entropy)
    assert meta["entropy"][0] == pytest.approx(sum(torch.tensor(space.sizes).log().tolist()))
    assert all(t["policy_entropy"] == meta["entropy"][t["step"]] for t in r.trials)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_state_is_refused_with_one_line_naming_it(tmp_path, space):
    run = tmp_path / "s"
    run.mkdir()
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    (run / "state.pt").write_bytes(pickle.dumps({"format": "x", "p": payload}))
    (run / "trials.jsonl").write_text("")
    with pytest.raises(FacecleanError) as e:
        search(space, SurrogateObjective(space), run, steps=2, batch=2, resume=True)
    assert str(e.value).startswith(str(run / "state.pt")) and "\n" not in str(e.value)
    assert not marker.exists()
    with pytest.raises(FacecleanError, match="state.pt: not a search state"):
        load_state(run / "state.pt")


def test_resume_refuses_other_inputs_and_another_batch(tmp_path, space):
    obj = SurrogateObjective(space, seed=0)
    run = tmp_path / "s"
    search(space, obj, run, steps=2, batch=4, fingerprints={"embeddings": "a", "val": "v"})
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    def resume(space=space, batch=4, embeddings="a"):
        fingerprints = {"embeddings": embeddings, "val": "v"}
        return search(space, obj, run, steps=4, batch=batch, resume=True, fingerprints=fingerprints)

    with pytest.raises(FacecleanError, match="the embeddings differ"):
        resume(embeddings="b")
    with pytest.raises(FacecleanError, match="was run with --batch 4; resume with the same"):
        resume(batch=8)
    with pytest.raises(FacecleanError, match="another search space"):
        resume(space=space.restrict("loss"))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    assert len(resume().trials) == 16


def test_a_torn_last_line_is_truncated_with_a_warning_and_rerun(tmp_path, space):
    obj = SurrogateObjective(space, seed=1)
    full = search(space, obj, tmp_path / "full", steps=3, batch=4)
    run = tmp_path / "cut"
    search(space, obj, run, steps=2, batch=4)
    # As a kill inside step 3 leaves it: two of its trials logged, the third torn mid-line.
    lines = (tmp_path / "full" / "trials.jsonl").read_text().splitlines(keepends=True)
    log = run / "trials.jsonl"
    log.write_text("".join(lines[:10]) + lines[10][:25])
    with pytest.warns(UserWarning, match="last line is torn"):
        r = search(space, obj, run, steps=3, batch=4, resume=True)
    assert _strip(r.trials) == _strip(full.trials)
    assert _strip(read_log(run)) == _strip(full.trials)
    # A log that lacks trials of a finished step was not written by this search.
    log.write_text("".join(lines[:5]))
    with pytest.raises(FacecleanError, match="lacks trials 5-11 of finished steps"):
        search(space, obj, run, steps=4, batch=4, resume=True)
    # A bad line that is not the last is corruption, not a torn write: an error naming it.
    log.write_text(lines[0] + "{oops\n" + "".join(lines[1:]))
    with pytest.raises(FacecleanError, match="trials.jsonl: line 2 is not valid JSON"):
        read_log(run)


def test_budgets_are_prefixes_so_a_longer_search_starts_like_a_shorter_one(tmp_path, space):
    obj = SurrogateObjective(space, seed=2)
    for method in ("ppo", "gaussian", "random"):
        short = search(space, obj, tmp_path / f"{method}5", steps=5, batch=4, method=method)
        long = search(space, obj, tmp_path / f"{method}9", steps=9, batch=4, method=method)
        assert _strip(long.trials[:20]) == _strip(short.trials)


def test_the_output_guard_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("trials.jsonl", "state.pt", "notes.txt"):
        (out / name).write_text("x")
    (out / "clean").mkdir()
    with pytest.raises(FacecleanError, match="pass --resume to continue it or --overwrite"):
        prepare_output(out, resume=False, overwrite=False)
    assert (out / "state.pt").exists()
    prepare_output(out, resume=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only the search's files
    with pytest.raises(FacecleanError, match="holds no search to resume"):
        prepare_output(out, resume=True, overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FacecleanError, match="is a file"):
        prepare_output(tmp_path / "file", resume=False, overwrite=False)


def test_two_workers_run_the_same_trials_after_torch_started_its_threads(tmp_path, space):
    torch.set_num_threads(2)
    torch.ones(512, 512) @ torch.ones(512, 512)  # OpenMP threads up, as in a real search
    obj = SurrogateObjective(space, seed=4)
    one = search(space, obj, tmp_path / "one", steps=2, batch=3, seed=1)
    two = search(space, obj, tmp_path / "two", steps=2, batch=3, seed=1, workers=2)
    assert _strip(two.trials) == _strip(one.trials)


SLOW_TRIAL = """
import os, sys, time
from faceclean.search.search_loop import search
from faceclean.search.space import load_space

def slow(combo, seed):
    with open(os.path.join(sys.argv[2], f"worker{os.getpid()}"), "w"):
        pass
    time.sleep(120)
    return {"acc": 0.5, "macs": 1.0}

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    from slowtrial import slow as picklable
    search(load_space(), picklable, sys.argv[1], steps=1, batch=2, workers=2)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_search_takes_its_workers_with_it(tmp_path):
    (tmp_path / "slowtrial.py").write_text(SLOW_TRIAL)
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "slowtrial.py"), str(tmp_path / "run"), str(marks)]
    )
    deadline = time.time() + 90
    while len(list(marks.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.1)
    workers = [int(p.name.removeprefix("worker")) for p in marks.iterdir()]
    assert len(workers) == 2 and all(_alive(w) for w in workers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30  # the workers poll their parent every 0.5 s
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leave them behind if the test fails
        os.kill(w, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"


def test_pool_workers_share_the_cores(tmp_path, monkeypatch, space):
    (tmp_path / "threadtrial.py").write_text(
        "import torch\n"
        "def trial(combo, seed):\n"
        "    return {'acc': 0.5, 'macs': 1.0, 'threads': torch.get_num_threads()}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from threadtrial import trial

    r = search(space, trial, tmp_path / "s", steps=1, batch=2, workers=2)
    assert {t["threads"] for t in r.trials} == {max(1, (os.cpu_count() or 1) // 2)}
