"""List files of face images and labels, in the three layouts other tools write.

* ``plain``: ``path label`` lines, whitespace separated, the label last (FaceX-Zoo, faceclean's
  own clean lists). The path may contain spaces: only the last field is the label.
* ``insightface``: ``aligned<TAB>path<TAB>label`` (InsightFace ``face2rec2.py`` lists; the
  first column is an "is aligned" flag, ignored).
* ``im2rec``: ``index<TAB>label[<TAB>label...]<TAB>path`` (MXNet ``im2rec.py``; labels written
  as floats such as ``17.000000``). With several labels the first is the identity.

:func:`detect_format` tells the layouts apart from the lines themselves; :func:`parse_list`
reads one. Labels must be small non-negative integers (``0 .. MAX_LABEL``; a float label
must be integral); anything else is a :class:`FacecleanError` naming the file and line.
A photo listed twice (the same path once normalised and put under the root) is read once,
with a warning; listed with two labels it is an error naming both lines.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from faceclean.errors import FacecleanError

FORMATS = ("plain", "insightface", "im2rec")
MAX_LABEL = 2**31 - 1  # labels are stored as int64 but trained as int32 class indices
_DETECT_LINES = 200


def parse_label(text: str) -> int | None:
    """``text`` as a label in ``0..MAX_LABEL`` ("17", "17.000000"), or None if it is not one."""
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            return None
        if not math.isfinite(f) or f != int(f):
            return None
        value = int(f)
    return value if 0 <= value <= MAX_LABEL else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _line_format(line: str) -> str | None:
    """The layout one line is written in, or None when it does not tell."""
    fields = line.split("\t")
    if len(fields) >= 3:
        first_int = fields[0].strip().lstrip("-").isdigit()
        middle = [f.strip() for f in fields[1:-1]]
        if first_int and all(_is_number(f) for f in middle) and not _is_number(fields[-1]):
            return "im2rec"
        if len(fields) == 3 and first_int and not _is_number(fields[1]) and _is_number(fields[2]):
            return "insightface"
    return "plain"


def _data_lines(lines):
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield lineno, raw.rstrip("\r\n")


def detect_format(lines: list[str], path: Path) -> str:
    """The layout of a list file's lines (the first ``_DETECT_LINES`` data lines decide).

    Raises FacecleanError when lines disagree (e.g. some tab-separated im2rec lines and some
    InsightFace ones), so a mixed file is never half misread.
    """
    seen: dict[str, int] = {}
    for lineno, line in _data_lines(lines[: _DETECT_LINES * 2]):
        fmt = _line_format(line)
        seen.setdefault(fmt, lineno)
        if len(seen) > 1:
            (a, la), (b, lb) = list(seen.items())[:2]
            raise FacecleanError(
                f"cannot tell the list format: line {la} looks {a} but line {lb} looks {b}; "
                "pass --format plain|insightface|im2rec",
                path,
            )
    return next(iter(seen), "plain")


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text list file (a leading BOM dropped); named errors otherwise."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FacecleanError(f"cannot read list file: {e.strerror}", path) from None
    if b"\0" in data[:4096]:
        raise FacecleanError("not a text list file (binary data)", path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FacecleanError("not a text list file (not UTF-8)", path) from None
    return text.splitlines()


def parse_list(
    path: str | Path, fmt: str = "auto", root: str | Path | None = None
) -> tuple[list[str], list[int], str, list[str]]:
    """Read a list file.

    Args:
        path: the list file.
        fmt: "auto" (detect from the lines) or one of :data:`FORMATS` to force it.
        root: the folder relative paths are under, so that ``a.jpg`` and ``/root/a.jpg``
            are known as one photo (None: paths are compared as written, normalised).

    Returns:
        (paths, original labels, the format used, warnings).
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise FacecleanError(f"unknown list format {fmt!r}; choose auto or {', '.join(FORMATS)}")
    lines = read_lines(path)
    used = detect_format(lines, path) if fmt == "auto" else fmt
    paths: list[str] = []
    labels: list[int] = []
    n_labels: set[int] = set()
    seen: dict[str, tuple[int, int]] = {}  # photo (normalised) -> (first line, its label)
    repeats: list[tuple[int, int]] = []
    expected = {
        "plain": "'path label'",
        "insightface": "'aligned<TAB>path<TAB>label'",
        "im2rec": "'index<TAB>label<TAB>path'",
    }[used]
    for lineno, line in _data_lines(lines):
        if used == "plain":
            fields = line.strip().rsplit(maxsplit=1)
            ok = len(fields) == 2
            img, label_text = (fields[0], fields[1]) if ok else ("", "")
        elif used == "insightface":
            fields = [f.strip() for f in line.split("\t")]
            ok = len(fields) == 3 and bool(fields[1])
            img, label_text = (fields[1], fields[2]) if ok else ("", "")
        else:
            fields = [f.strip() for f in line.split("\t")]
            ok = len(fields) >= 3 and bool(fields[-1])
            img, label_text = (fields[-1], fields[1]) if ok else ("", "")
            n_labels.add(len(fields) - 2)
        if not ok:
            raise FacecleanError(
                f"line {lineno}: expected {expected} ({used} format), got {line.strip()[:80]!r}",
                path,
            )
        label = parse_label(label_text)
        if label is None:
            raise FacecleanError(
                f"line {lineno}: label {label_text[:40]!r} is not a small non-negative integer "
                f"(0..{MAX_LABEL})",
                path,
            )
        key = os.path.normpath(os.path.join(root, img) if root is not None else img)
        if key in seen:
            first, first_label = seen[key]
            if first_label != label:
                raise FacecleanError(
                    f"line {lineno}: {img[:80]!r} is listed again with label {label} (line "
                    f"{first} gives it {first_label}); one photo cannot be two people",
                    path,
                )
            repeats.append((lineno, first))
            continue
        seen[key] = (lineno, label)
        paths.append(img)
        labels.append(label)
    warnings = []
    if repeats:
        # The same line twice would be read (extracted, aligned) as two images: a doubled
        # weight in its centroid and a perfect near-duplicate pair. Read once, and say so.
        lineno, first = repeats[0]
        warnings.append(
            f"{path}: {len(repeats):,} line(s) repeat an earlier one (same photo, same "
            f"label; e.g. line {lineno} = line {first}): each photo is read once"
        )
    if max(n_labels, default=1) > 1:
        warnings.append(
            f"{path}: im2rec lines carry up to {max(n_labels)} labels; the first is the identity"
        )
    if not paths:
        raise FacecleanError(f"list file has no {expected} lines", path)
    return paths, labels, used, warnings
