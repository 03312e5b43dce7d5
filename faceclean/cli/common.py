"""The `faceclean` command group, its error handling, and the options and tables the
stage modules share."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from faceclean import __version__
from faceclean.errors import FacecleanError
from faceclean.outputs import commit_files, tmp_sibling

# In a log file (stderr not a terminal) rich would wrap tables at 80 columns and cut cells
# to "0.…"; a wide fixed width keeps every column whole there.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _triple(ctx, param, value):
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise click.BadParameter("give one number or three comma-separated numbers")
    return parts


class Finite(click.FloatRange):
    """A float option that refuses NaN and infinities (``FloatRange`` lets NaN through:
    every comparison with it is false), optionally within a range."""

    name = "finite float"

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v

    def _describe_range(self) -> str:
        if self.min is None and self.max is None:
            return "finite"  # click would print "x<=None"
        return super()._describe_range()


# No count, size or seed in faceclean needs more; a larger integer only reaches NumPy,
# torch or the OS as an overflow traceback (``--seed 1e30``, ``--workers 2**70``).
MAX_INT = 2**31 - 1


def _bounded(kind: click.ParamType) -> click.ParamType:
    """Integer options without an upper bound get :data:`MAX_INT` as theirs."""
    if isinstance(kind, click.IntRange) and kind.max is None:
        return click.IntRange(kind.min, MAX_INT, min_open=kind.min_open, clamp=kind.clamp)
    if kind is click.INT:
        return click.IntRange(-MAX_INT, MAX_INT)
    return kind


_JSON_KEY = "faceclean.json"
_SUMMARIES_KEY = "faceclean.summaries"


def _given_paths(ctx: click.Context) -> list[Path]:
    """Every path the verb was given (inputs and outputs), from its parsed parameters."""
    out = []
    for name, value in ctx.params.items():
        values = value if isinstance(value, list | tuple) else [value]
        out += [Path(v) for v in values if isinstance(v, Path) and name != "json_path"]
    return out


def _check_json_target(ctx: click.Context) -> None:
    """``--json`` is refused before any work when it would write over one of the verb's
    inputs or outputs (or into an output folder), or when its folder does not exist."""
    target = ctx.meta.get(_JSON_KEY)
    if target is None or str(target) == "-":
        return
    target = Path(target)
    if not target.parent.resolve().is_dir():
        raise click.BadParameter(f"{target}: its folder does not exist", param_hint="'--json'")
    if target.is_dir():
        raise click.BadParameter(f"{target} is a folder", param_hint="'--json'")
    resolved = target.resolve()
    for given in _given_paths(ctx):
        same = given.resolve() == resolved
        if not same and target.exists() and given.exists():
            same = os.path.samefile(given, target)
        if same or given.resolve() in resolved.parents:
            raise click.BadParameter(
                f"{target} is also {given} (an input or output of this command, or inside "
                "it); write the summary elsewhere",
                param_hint="'--json'",
            )
    output = ctx.params.get("output")
    if isinstance(output, Path) and target.suffix != ".json":
        # Outputs have companions named after them (X.truth.parquet, X.failures.tsv,
        # X.align.parquet, X.idx beside X.rec), never .json: --json must not take one.
        stem = output.name.split(".")[0]
        if output.resolve().parent == resolved.parent and target.name.startswith(stem + "."):
            raise click.BadParameter(
                f"{target} is named like a companion {output} writes beside it; name the "
                "summary FILE.json",
                param_hint="'--json'",
            )


def _remember_json(ctx: click.Context, param, value):
    if value is not None:
        ctx.meta[_JSON_KEY] = value
    return value


class OneLineUsage(click.Command):
    """Option errors (``--batch-size 0``, ``--std 0``) as one ``Error: ...`` line, exit 2,
    without the usage block click prints by default; and ``--json PATH`` on every verb, so
    that scripts read the summary instead of parsing the table."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            param.type = _bounded(param.type)
        self.params.append(
            click.Option(
                ["--json", "json_path"],
                type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
                expose_value=False,
                callback=_remember_json,
                help="Also write the summary as JSON to this file ('-': standard output).",
            )
        )

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            e.ctx = None  # no context: click prints the message alone
            raise

    def invoke(self, ctx):
        _check_json_target(ctx)
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # checks between options, made in the verb's body
            e.ctx = None
            raise
        except OSError as e:
            # A full disk met while writing through an open file carries no file name: the
            # verb's output is the file it was writing.
            output = ctx.params.get("output")
            if e.errno in _OUTPUT_ERRNOS and not e.filename and output is not None:
                raise OSError(e.errno, e.strerror, str(output)) from None
            raise


# Output-path failures the checks before work cannot foresee (disk full, a quota, a folder
# made read-only meanwhile): one line naming the file, not a traceback.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


# ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` (outputs.tmp_sibling): where an output is
# built, an internal name; a user knows the output by ``<name>``.
_TEMPORARY = re.compile(r"\.([^/\\]+?)\.(?:tmp|old)-\d+(?=[/\\:]|$|\s)")


def public_paths(message: str) -> str:
    """``message`` with every temporary path component replaced by the output it becomes."""
    return _TEMPORARY.sub(r"\1", message)


def _error(message: str) -> None:
    message = public_paths(message)
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns FacecleanError (and out-of-space or permission errors) into one red line
    and exit status 2, and Ctrl-C into a line saying how to resume, exit status 130."""

    command_class = OneLineUsage  # option errors as one line on every verb

    def invoke(self, ctx):
        try:
            result = super().invoke(ctx)
            _write_json_summary(ctx)
            return result
        except KeyboardInterrupt:
            console.print(
                "[bold yellow]interrupted:[/] finished work is kept (extract chunks, train "
                "epochs, search trials); run the same command again to resume",
                highlight=False,
            )
            sys.exit(130)
        except FacecleanError as e:
            _error(str(e))
        except OSError as e:
            if e.errno not in _OUTPUT_ERRNOS:
                raise
            _error(f"{e.filename}: {e.strerror}" if e.filename else str(e))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceclean")
def main() -> None:
    """faceclean: clean face-recognition training sets.

    \b
    Stages, one verb each:
      align              raw photos -> ArcFace-aligned 112x112 crops (ONNX detector)
      extract            images -> L2-normalised embeddings (Parquet), ONNX face model
      filter             score every sample's discriminability, drop D < tau_intra
      merge              unite classes whose centroids have cosine > tau_inter
      clean              filter + merge + the clean list training reads
      overlap            training identities that are evaluation identities
      inject-noise       corrupt a clean embedding store with known label noise
      report             D histogram, drops per class, merged groups, contact sheet
      evaluate-cleaning  precision/recall of a clean against the injected truth
      train              train a backbone (W, D) with a margin loss on a clean list
      eval               TAR@FAR / ACC on validation identities, .bin accuracy
      export             a trained run -> ONNX that extract reads without flags
      search             the joint RL search over cleaning, loss and backbone
      demo               the whole pipeline on synthetic faces with known noise
      doctor             versions, GPUs, and a CPU-vs-GPU equality check
    """


_device = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto uses every GPU FAISS sees; cpu or cuda to insist.",
)
_backend = click.option(
    "--backend",
    type=click.Choice(["auto", "blas", "faiss"]),
    default="auto",
    show_default=True,
    help="Hardest-negative search: auto = FAISS on GPU, blocked BLAS on CPU (faster there).",
)
_batch_rows = click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=65536,
    show_default=True,
    help="Rows per streamed batch (bounds memory).",
)
_loo = click.option(
    "--loo-below",
    type=click.IntRange(min=0),
    default=None,
    help="0.1's behaviour: leave-one-out own centroids only in classes of fewer samples "
    "(e.g. 10), the full centroid elsewhere [default: leave-one-out for every class].",
)
_overwrite = click.option("--overwrite", is_flag=True, help="Replace an existing output.")
_ray_address = click.option(
    "--ray-address",
    help="Run the class sums and the scoring of each shard (or row-chunk of one store) as "
    "Ray tasks on this cluster ('local' starts one here); the same result as one process.",
)


# Cleaning options and helpers shared by the cleaning verbs (cli/clean.py).
_tau_intra_help = "Drop samples whose discriminability D is below this (paper: 0.3)."
_tau_inter = click.option(
    "--tau-inter",
    type=Finite(-1.0, 1.0),
    default=0.62,
    show_default=True,
    help="Merge classes whose centroid cosine exceeds this (paper: 0.62); below 0 needs --force.",
)
_force = click.option(
    "--force",
    is_flag=True,
    help="Accept a threshold that is almost certainly a typo: --tau-inter below 0 (merges "
    "almost everything); on clean, --dedup below 0.8.",
)
_max_group = click.option(
    "--max-group-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Chain guard: split bigger groups by cutting their weakest links (0: off).",
)


def _check_tau_inter(tau_inter: float, force: bool) -> None:
    if tau_inter < 0 and not force:
        raise click.BadParameter(
            f"{tau_inter} would link almost every pair of classes (a typo?); "
            "pass --force if you mean it",
            param_hint="'--tau-inter'",
        )


def _warn(message: str | None) -> None:
    if message:
        console.print(f"[bold yellow]WARNING:[/] {message}", highlight=False, soft_wrap=True)


def _write_pairs(tables_paths) -> None:
    """Write each (table, path) under its temporary name, then rename them all, the
    first (the main output) last: never a new file beside an old companion."""
    import pyarrow.parquet as pq

    staged = [(tmp_sibling(path), path) for _, path in tables_paths]
    try:
        for (table, _), (tmp, _) in zip(tables_paths, staged, strict=True):
            pq.write_table(table, tmp)
        commit_files(staged[::-1])
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def _summary_table(title: str, rows: dict, float_format: str | None = None) -> None:
    """Print a verb's summary as a two-column table on stderr and keep it for ``--json``
    with its raw values (``float_format``, e.g. ``"{:.4f}"``, is for the table only)."""
    record_summary(title, rows)
    table = Table(title=title, show_header=False)
    for k, v in rows.items():
        plain_int = isinstance(v, int) and not isinstance(v, bool)
        if float_format and isinstance(v, float):
            text = float_format.format(v)
        else:
            text = f"{v:,}" if plain_int else str(v)
        table.add_row(str(k), text)
    console.print(table)


def record_summary(title: str, rows: dict) -> None:
    """Keep ``rows`` (a verb's result, plain values) for ``--json``; printing is the caller's."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and rows is not None:
        ctx.find_root().meta.setdefault(_SUMMARIES_KEY, []).append((title, dict(rows)))


def _write_json_summary(group_ctx: click.Context) -> None:
    """Write what the verb recorded to its ``--json`` target: one object, ``{"verb": ...,
    "summary": {...}}`` (``summaries``: a list, when a verb printed several tables)."""
    target = group_ctx.meta.get(_JSON_KEY)  # click shares meta between parent and child
    if target is None:
        return
    recorded = group_ctx.meta.get(_SUMMARIES_KEY, [])
    doc: dict = {"verb": group_ctx.invoked_subcommand}
    if len(recorded) == 1:
        doc["title"], doc["summary"] = recorded[0]
    else:
        doc["summaries"] = [{"title": t, "summary": r} for t, r in recorded]
    text = json.dumps(_plain(doc), indent=2, default=str, allow_nan=False) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    tmp = tmp_sibling(target)
    try:
        tmp.write_text(text)
        commit_files([(tmp, target)])
    finally:
        tmp.unlink(missing_ok=True)


def _plain(value):
    """JSON-safe: NaN and infinities become null (strict JSON has no such numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
