"""`faceclean review`: the local web app over a clean folder (see :mod:`faceclean.review`)."""

from __future__ import annotations

from pathlib import Path

import click

from faceclean.cli.common import _warn, console, main, record_summary


@main.command("review")
@click.argument("clean_dir", type=click.Path(path_type=Path))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but a loopback address exposes your images.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image root [default: the dataset the clean folder records].",
)
def review_cmd(clean_dir, port, host, data):
    """Review a clean in the browser: removals, borderline faces, merged groups, duplicates.

    Serves CLEAN_DIR (a `faceclean clean` output) on http://HOST:PORT/ and prints the
    address; it opens no browser. Each queue is sorted by doubt, most doubtful first, and
    paged. Keys: k keep, d drop, a accept, s split, r reject the weakest link, u undo,
    j next. Every decision is saved at once into CLEAN_DIR/review.parquet; stop with
    Ctrl-C at any time and start again to resume. Apply the review with
    `faceclean clean ... --review CLEAN_DIR/review.parquet`.
    """
    from faceclean.review.server import serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        _warn(f"binding {host}: anyone who can reach it sees your images")

    def ready(url: str) -> None:
        click.echo(f"faceclean review: {url}  (Ctrl-C to stop)")

    summary = serve(clean_dir, host, port, data, on_ready=ready)
    record_summary("faceclean review", summary)
    console.print(
        f"stopped; {summary['decisions']:,} decision(s) saved in {summary['review']} "
        f"({summary['decisions'] - summary['decisions_at_start']:+,} this session)",
        highlight=False,
    )
