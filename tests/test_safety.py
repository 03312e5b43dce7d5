"""faceclean.outputs: an output is never an input, never replaced without --overwrite,
never written by two processes at once, and never left half old, half new."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import lock_held

from faceclean.errors import FacecleanError
from faceclean.outputs import (
    atomic_dir,
    check_output,
    commit_files,
    lock_path,
    output_lock,
    remove_stale,
    writing,
)


def test_output_that_is_an_input_is_refused(tmp_path):
    inp = tmp_path / "emb.parquet"
    inp.write_text("x")
    with pytest.raises(FacecleanError, match="is also an input"):
        check_output(tmp_path / "sub" / ".." / "emb.parquet", overwrite=True, inputs=[inp])
    os.symlink(inp, tmp_path / "link.parquet")
    with pytest.raises(FacecleanError, match="is also an input"):
        check_output(tmp_path / "link.parquet", overwrite=True, inputs=[inp])
    os.link(inp, tmp_path / "hard.parquet")
    with pytest.raises(FacecleanError, match="is also an input"):
        check_output(tmp_path / "hard.parquet", overwrite=True, inputs=[inp])
    # a folder output holding an input would delete it when swapped in
    with pytest.raises(FacecleanError, match="holds the input"):
        check_output(tmp_path, overwrite=True, inputs=[inp], folder=True)
    assert inp.read_text() == "x"


def test_existing_output_needs_overwrite_and_the_right_kind(tmp_path):
    f = tmp_path / "out.parquet"
    f.write_text("old")
    with pytest.raises(FacecleanError, match="already exists; pass --overwrite"):
        check_output(f, overwrite=False)
    assert check_output(f, overwrite=True) == f
    with pytest.raises(FacecleanError, match="is a folder; give a file path"):
        check_output(tmp_path, overwrite=True)
    with pytest.raises(FacecleanError, match="is not a folder; give a folder path"):
        check_output(f, overwrite=True, folder=True)
    with pytest.raises(FacecleanError, match="out.parquet is not a folder"):
        check_output(f / "x.parquet", overwrite=False)
    assert f.read_text() == "old"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(FacecleanError, match="is not writable"):
        check_output(ro / "out.parquet", overwrite=False)


def test_atomic_dir_keeps_the_previous_result_when_the_rebuild_fails(tmp_path):
    out = tmp_path / "cleaned"
    with atomic_dir(out) as tmp:
        (tmp / "summary.json").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "summary.json").write_text("second")
        (tmp / "clean.lst").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cleaned"]
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert (out / "summary.json").read_text() == "first"
    with atomic_dir(out) as tmp:  # a complete rebuild replaces the folder whole
        (tmp / "clean.lst").write_text("new")
    assert [p.name for p in out.iterdir()] == ["clean.lst"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cleaned"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    out = tmp_path / "cleaned"
    out.mkdir()
    (out / "summary.json").write_text("kept")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (tmp_path / f".cleaned.tmp-{dead}").mkdir()
    (tmp_path / f".cleaned.tmp-{dead}" / "summary.json").write_text("torn")
    (tmp_path / f".other.tmp-{dead}").write_text("not ours")
    alive = tmp_path / f".cleaned.tmp-{os.getppid()}"  # a live writer's: left alone
    alive.mkdir()
    removed = remove_stale(out)
    assert [p.name for p in removed] == [f".cleaned.tmp-{dead}"]
    assert alive.exists() and (tmp_path / f".other.tmp-{dead}").exists()
    assert (out / "summary.json").read_text() == "kept"


def test_a_swap_killed_between_its_renames_is_repaired(tmp_path):
    out = tmp_path / "cleaned"
    old = tmp_path / ".cleaned.old-999999999"  # what a kill mid-swap leaves
    old.mkdir()
    (old / "summary.json").write_text("previous")
    (tmp_path / ".cleaned.tmp-999999999").mkdir()
    remove_stale(out)
    assert (out / "summary.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cleaned"]


def test_second_writer_is_refused_naming_the_holder_pid(tmp_path):
    out = tmp_path / "cleaned"
    with lock_held(out) as holder:
        with pytest.raises(FacecleanError, match=f"another process \\(PID {holder.pid}\\)"):
            with writing(out, overwrite=True, folder=True):
                pass
    # the kernel dropped the dead holder's lock: its lock file is taken over
    assert lock_path(out).exists() and lock_path(out).read_text().strip() == str(holder.pid)
    with writing(out, overwrite=True, folder=True) as tmp:
        (tmp / "done").write_text("1")
    assert (out / "done").exists() and not lock_path(out).exists()


def test_commit_files_never_leaves_a_new_file_beside_an_old_companion(tmp_path):
    main, truth = tmp_path / "noisy.parquet", tmp_path / "noisy.truth.parquet"
    main.write_text("old")
    truth.write_text("old")
    t1, t2 = tmp_path / ".t1", tmp_path / ".t2"
    t1.write_text("new")
    t2.write_text("new")
    commit_files([(t2, truth), (t1, main)])
    assert main.read_text() == truth.read_text() == "new"
    with output_lock(main):
        assert lock_path(main).read_text().strip() == str(os.getpid())


def test_a_writer_may_wait_for_the_holder_instead_of_failing(tmp_path):
    out = tmp_path / "cleaned"
    with lock_held(out, seconds=0.5):  # released while the writer waits
        with writing(out, overwrite=False, folder=True, wait=60) as tmp:
            (tmp / "done").write_text("1")
    assert (out / "done").exists()


def test_a_resumable_folder_drops_dead_writers_temporaries(tmp_path):
    from faceclean.outputs import resumable_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / ".checkpoint.pt.tmp-999999999").write_bytes(b"torn")  # a kill during a save
    with resumable_dir(run, overwrite=False) as folder:
        assert folder == run
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
