"""Output safety shared by every verb: never write over an input, never replace an existing
output without ``--overwrite``, never let two processes write one output, never leave a
mix of an old and a new result.

The one call a verb makes is :func:`writing`::

    with writing(out_dir, overwrite=overwrite, inputs=embeddings, folder=True) as tmp:
        ...  # build every file of the result in ``tmp``

It runs, in order and before any work:

1. :func:`check_output`: the output is not one of the inputs (paths resolved, symlinks and
   hard links seen through) and is not a folder holding an input; it does not exist unless
   ``overwrite``; a file output is not a folder and a folder output is not a file; the
   nearest existing parent is a writable folder. Each problem is one ``FacecleanError``.
2. :func:`output_lock`: ``.<name>.lock`` beside the output, held with ``flock`` and holding
   the writer's PID. A second writer is refused with that PID in the message. The kernel
   drops the lock when its holder dies, so the lock file of a killed run is simply taken
   over. Under the lock, temporaries a dead process left (``.<name>.tmp-<pid>``,
   ``.<name>.old-<pid>``) are removed.
3. For a folder output, :func:`atomic_dir`: the result is built in the empty sibling
   ``.<name>.tmp-<pid>`` and swapped in whole when the block ends without error (an atomic
   exchange on Linux; elsewhere two renames, and a kill between them is repaired by the next
   writer). A failed or killed run leaves the previous result as it was.

File outputs are written with :func:`faceclean.data.store.atomic_path` (temporary name,
renamed when complete); a file with companions (``x.parquet`` + ``x.truth.parquet``) is
committed with :func:`commit_files`, which never leaves a new file beside an old companion.

Resumable outputs (a training run folder, extract's ``.partial``) are not swapped: they
are the state a re-run continues from, updated one atomic file at a time, and only their
``--overwrite`` (a fresh start) is built aside and swapped in.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from faceclean.errors import FacecleanError

try:  # POSIX; on other systems the lock degrades to an exclusive-create file
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

PathLike = str | os.PathLike


def _paths(items) -> list[Path]:
    if items is None:
        return []
    if isinstance(items, str | os.PathLike):
        return [Path(items)]
    return [Path(p) for p in items if p is not None]


def refuse_inputs(outputs, inputs) -> None:
    """Raise ``FacecleanError`` when an output is one of the inputs, or is a folder that
    holds an input (a folder output is replaced whole, which would delete the input)."""
    for out in _paths(outputs):
        o = out.resolve()
        for inp in _paths(inputs):
            i = inp.resolve()
            same = o == i
            if not same and o.exists() and i.exists():
                same = os.path.samefile(o, i)  # hard links
            if same:
                raise FacecleanError(f"is also an input ({inp}); write the output elsewhere", out)
            if o in i.parents:
                raise FacecleanError(
                    f"holds the input {inp}; replacing this folder would delete it", out
                )


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        p = p.parent
    return p


def check_output(path: PathLike, *, overwrite: bool, inputs=(), folder: bool = False) -> Path:
    """Every check that can be made on an output before the work starts (see the module
    doc, step 1). Returns ``path`` as a Path; raises ``FacecleanError`` naming it."""
    path = Path(path)
    refuse_inputs([path], inputs)
    if path.exists() or path.is_symlink():
        if folder and not path.is_dir():
            raise FacecleanError("exists and is not a folder; give a folder path", path)
        if not folder and path.is_dir():
            raise FacecleanError("is a folder; give a file path", path)
        if not overwrite:
            raise FacecleanError("already exists; pass --overwrite to replace it", path)
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise FacecleanError(f"cannot create the output: {parent} is not a folder", path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FacecleanError(f"cannot write the output: folder {parent} is not writable", path)
    return path


def lock_path(path: PathLike) -> Path:
    """The lock file of an output: ``.<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _try_lock(lock: Path) -> int | None:
    """An fd holding ``lock``, or None if another process holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as e:  # a file system without flock (some network mounts)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            return fd  # the PID is still recorded; only the kernel's guarantee is missing
        # The previous holder unlinks the file on release: if it did so after we opened
        # it, we hold a lock on a file nobody else will look at. Open the current one.
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


@contextmanager
def output_lock(path: PathLike, wait: float = 0.0) -> Iterator[Path]:
    """Hold ``.<name>.lock`` for the block (see the module doc, step 2).

    Args:
        path: the output (file or folder) to protect.
        wait: seconds to wait for another holder before giving up (0: refuse at once).

    Raises ``FacecleanError`` naming the holder's PID when another process holds it.
    """
    path = Path(path)
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while (fd := _try_lock(lock)) is None:
        if time.monotonic() >= deadline:
            raise FacecleanError(
                f"another process (PID {_holder(lock)}) is writing this output; "
                "wait for it to finish or pick another output",
                path,
            )
        time.sleep(0.05)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        remove_stale(path)
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)


def _temporaries(path: Path) -> Iterator[tuple[Path, str, int]]:
    """(entry, kind, pid) of every ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` sibling."""
    if not path.parent.is_dir():
        return
    for kind in ("tmp", "old"):
        for entry in path.parent.glob(f".{_escape(path.name)}.{kind}-*"):
            suffix = entry.name.rsplit("-", 1)[-1]
            if suffix.isdigit():
                yield entry, kind, int(suffix)


def _escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def remove_stale(path: PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` whose writer is dead; returns what was removed.

    If a swap was killed between its two renames (systems without an atomic exchange),
    ``path`` is missing and its previous version waits as ``.<name>.old-<pid>``: it is put
    back first, so the previous result survives."""
    path = Path(path)
    stale = [(e, k, p) for e, k, p in _temporaries(path) if p == os.getpid() or not pid_alive(p)]
    if not (path.exists() or path.is_symlink()):
        olds = sorted((e for e, k, _ in stale if k == "old"), key=lambda e: e.stat().st_mtime)
        if olds:
            os.rename(olds[-1], path)
            stale = [s for s in stale if s[0] != olds[-1]]
    for entry, _, _ in stale:
        _remove(entry)
    return [e for e, _, _ in stale]


def remove_stale_inside(folder: PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporaries dead writers left inside a folder that is updated in place
    (a run folder: ``.checkpoint.pt.tmp-<pid>`` from a kill during a save; with
    ``recursive``, also in its sub-folders: align's identity folders)."""
    removed = []
    folder = Path(folder)
    for entry in list(folder.rglob(".*.tmp-*") if recursive else folder.glob(".*.tmp-*")):
        suffix = entry.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and (int(suffix) == os.getpid() or not pid_alive(int(suffix))):
            _remove(entry)
            removed.append(entry)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    res = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return res == 0


def swap_in(new: Path, path: Path) -> None:
    """Put the complete folder ``new`` at ``path``, removing what was there."""
    if not (path.exists() or path.is_symlink()):
        os.rename(new, path)
    elif path.is_dir() and not path.is_symlink() and _exchange(new, path):
        shutil.rmtree(new)  # ``new`` now holds the previous result
    else:
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, old)
        os.rename(new, path)  # a kill right before this line is repaired by remove_stale
        _remove(old)


@contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; when the block ends without error it
    replaces ``path`` whole, otherwise it is deleted and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def writing(
    path: PathLike,
    *,
    overwrite: bool,
    inputs=(),
    folder: bool = False,
    companions: Iterable[PathLike] = (),
    wait: float = 0.0,
) -> Iterator[Path]:
    """Check, lock and (for a folder) build aside: see the module doc.

    Yields the temporary folder to fill (``folder=True``) or ``path`` itself (a file
    output, to be written with ``atomic_path``/:func:`commit_files`). ``companions`` are
    files written beside ``path`` under the same lock; they get the same checks.
    """
    path = Path(path)
    names = [path, *map(Path, companions)]
    for p in names:
        check_output(p, overwrite=overwrite, inputs=inputs, folder=folder and p == path)
    with output_lock(path, wait):
        # Another writer may have finished between the check and the lock.
        for p in names:
            check_output(p, overwrite=overwrite, inputs=inputs, folder=folder and p == path)
        for p in names[1:]:
            remove_stale(p)
        if folder:
            with atomic_dir(path) as tmp:
                yield tmp
        else:
            yield path


@contextmanager
def resumable_dir(
    path: PathLike,
    *,
    overwrite: bool,
    inputs=(),
    marker: str = "config.json",
    lock: bool = True,
) -> Iterator[Path]:
    """A folder output that a re-run continues (a training run): how swap and resume meet.

    Without ``overwrite`` the folder itself is yielded (created if missing): it is the
    state a re-run resumes from, each of its files replaced atomically as work goes on, so
    a kill leaves the last complete step. A folder that exists, is not empty and lacks
    ``marker`` is not such a run and is refused. With ``overwrite`` an existing folder is
    not touched until the new one is complete: the fresh run is built in
    ``.<name>.tmp-<pid>`` and swapped in whole; a kill leaves the old run as it was and its
    temporary is removed by the next writer (the fresh run then starts over). Checked and
    locked before any work, like :func:`writing`; ``lock=False`` is for the processes
    of a multi-process job other than the one that writes (they may not overwrite).
    """
    path = Path(path)
    refuse_inputs([path], inputs)
    if path.exists() and not path.is_dir():
        raise FacecleanError("exists and is not a folder; give a folder path", path)
    if path.is_dir() and not overwrite and any(path.iterdir()) and not (path / marker).exists():
        raise FacecleanError(
            f"exists and holds no {marker}: not a run to resume; pass --overwrite to replace it",
            path,
        )
    check_output(path, overwrite=True, inputs=inputs, folder=True)
    if not lock:
        if overwrite:
            raise FacecleanError("only the writing process may overwrite a run folder", path)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with output_lock(path):
        if overwrite and path.exists():
            with atomic_dir(path) as tmp:
                yield tmp
        else:
            created = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
            remove_stale_inside(path)
            try:
                yield path
            except BaseException:
                if created and not any(path.iterdir()):  # refused before writing anything
                    path.rmdir()
                raise


def tmp_sibling(path: PathLike) -> Path:
    """``.<name>.tmp-<pid>``: the temporary a file or folder is built under before it is
    renamed into place (:func:`faceclean.data.store.atomic_path` and :func:`atomic_dir`
    use it, so :func:`remove_stale` finds what a killed writer left)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def commit_files(pairs: Iterable[tuple[PathLike, PathLike]]) -> None:
    """Rename each complete temporary to its final name, the last pair last.

    Every old final file is removed first, so a kill inside this call leaves some outputs
    missing, never a new file beside an old companion; put the main output last, so that
    its presence means the whole set is in place."""
    pairs = [(Path(t), Path(f)) for t, f in pairs]
    for _, final in pairs:
        final.unlink(missing_ok=True)
    for tmp, final in pairs:
        os.replace(tmp, final)
