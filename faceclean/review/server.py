"""The review app's HTTP server: the standard library's ``ThreadingHTTPServer``.

Why no web framework: the app is one person's browser talking to one process on the same
machine: a handful of GET routes (pages, thumbnails) and one POST. ``http.server`` does
that with no dependency to install on a GPU node, and nothing is asynchronous enough to
need an event loop. What a framework would add is done here by hand and tested:

* GET ``/``, ``/q/<queue>?page=N`` (without a page: the page of the first undecided item,
  so reopening resumes), ``/thumb?p=<path>`` (only images under the dataset root;
  ``&src=eval``: under the evaluation set's root, for the overlap queue);
* POST ``/decide``: the only request that changes anything; it must carry the session's
  random token in ``X-Review-Token`` (a page of another site cannot read it), and a
  ``Host`` other than a loopback name or the bound address is refused (DNS rebinding);
* pages are sent with a Content-Security-Policy that lets them load nothing from
  elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import secrets
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from faceclean.errors import FacecleanError
from faceclean.outputs import output_lock
from faceclean.review import pages
from faceclean.review.index import (
    FACE_KINDS,
    INDEX_DIR,
    KINDS,
    ROW_GROUP,
    ReviewIndex,
    check_clean_folder,
)
from faceclean.review.store import REVIEW_FILE, ReviewStore
from faceclean.review.thumbs import Thumbnails

CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"
)
MAX_BODY = 4096


class ReviewApp:
    """Everything a request needs: the queues, the decisions, the thumbnails, the token."""

    def __init__(self, clean_dir: str | Path, data_root: str | Path | None = None):
        self.clean_dir = Path(clean_dir)
        self.index = ReviewIndex(self.clean_dir)
        root = data_root or self.index.summary.get("dataset")
        self.thumbs = Thumbnails(root, self.clean_dir / INDEX_DIR / "thumbs")
        # The evaluation set's faces (the overlap queue) live under their own root.
        self.eval_thumbs = Thumbnails(self.index.eval_root, self.clean_dir / INDEX_DIR / "eval")
        self.store = ReviewStore(self.clean_dir)
        self.token = secrets.token_urlsafe(24)

    def decided(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.store.rows.values():
            if r["decision"] != "reject_link":
                out[r["kind"]] = out.get(r["kind"], 0) + 1
        return out

    def first_undecided(self, kind: str) -> int:
        """Position of the first item without a decision (where a person stopped)."""
        f = self.index.files[kind]
        for g in range(f.num_row_groups):
            keys = f.read_row_group(g, columns=["key"])["key"].to_pylist()
            for j, key in enumerate(keys):
                if key not in self.store.rows:
                    return g * ROW_GROUP + j
        return max(self.index.counts[kind] - 1, 0)

    def _link_key(self, row: dict, link: int) -> tuple[str, str, str]:
        names = dict(zip(row["labels"], row["identities"], strict=True))
        a, b = names[row["link_a"][link]], names[row["link_b"][link]]
        return f"{row['key']} link {a} | {b}", a, b

    def rejected(self, row: dict) -> set[int]:
        """Indices of a merged group's rejected links or a duplicate group's dropped files."""
        if "files" in row:
            return {j for j, p in enumerate(row["files"]) if self.store.decision(p) == "drop"}
        return {
            j
            for j in range(len(row.get("link_a") or []))
            if self.store.decision(self._link_key(row, j)[0]) == "reject_link"
        }

    def decide(self, payload: dict) -> dict:
        """Apply one POSTed decision; raises ValueError on a malformed one."""
        kind, pos = payload.get("kind"), payload.get("position")
        decision, link = payload.get("decision"), payload.get("link")
        if kind not in KINDS or not isinstance(pos, int) or isinstance(pos, bool):
            raise ValueError("kind or position missing or wrong")
        row = self.index.item(kind, pos)
        if row is None:
            raise ValueError(f"no item {pos} in {kind}")
        if kind in FACE_KINDS:
            key = row["key"]
            shown = {k: row[k] for k in ("label", "discriminability", "cos_pos", "cos_neg")}
            shown |= {"file": row["path"], "norm": row["norm"], "identities": [row["identity"]]}
        elif kind == "merges":
            key = row["key"]
            cos = row["link_cosine"]
            shown = {"identities": row["identities"], "cosine": min(cos) if cos else None}
            if link is not None or decision == "reject_link":
                if not isinstance(link, int) or not 0 <= link < len(row["link_a"]):
                    raise ValueError("reject_link needs the index of one of the group's links")
                key, a, b = self._link_key(row, link)
                shown |= {"link_a": a, "link_b": b, "cosine": cos[link]}
        elif kind == "overlap":
            if decision not in (None, "accept", "split"):
                raise ValueError("an overlap pair is accepted or split")
            key = row["key"]
            shown = {"identities": [row["train_identity"], row["eval_identity"]]}
            shown |= {"label": row["train_label"], "cosine": row["cosine"]}
        elif link is not None:  # one file of a duplicate group, dropped (or cleared)
            if not isinstance(link, int) or not 0 <= link < len(row["files"]):
                raise ValueError("a file decision needs the index of one of the group's files")
            if decision not in (None, "drop"):
                raise ValueError("a file of a duplicate group can only be dropped")
            key = row["files"][link]
            shown = {"file": key, "label": row["labels"][link], "cosine": row["cosines"][link]}
            shown["identities"] = [row["identities"][link]]
        else:
            if decision not in (None, "accept", "split"):
                raise ValueError("a duplicate group is accepted or split (or one file dropped)")
            key = row["key"]
            shown = {"files": row["files"], "identities": row["identities"]}
            shown["cosine"] = min(row["cosines"]) if row["cosines"] else None
        self.store.set(key, kind, decision, shown)
        return {"position": pos, "decision": decision, "link": link}


def _handler(app: ReviewApp, allowed_hosts: set[str] | None) -> type[BaseHTTPRequestHandler]:
    """The request handler; ``allowed_hosts`` None accepts any ``Host`` (a wildcard bind,
    which the CLI warns about)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "faceclean-review"

        def log_message(self, *args) -> None:  # quiet: the terminal shows the address only
            pass

        def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "max-age=86400" if cache else "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _text(self, status: int, text: str) -> None:
            self._send(status, text.encode(), "text/plain; charset=utf-8")

        def _host_ok(self) -> bool:
            if allowed_hosts is None:
                return True
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            return host in allowed_hosts

        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            if not self._host_ok():
                return self._text(403, "unexpected Host header")
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/":
                body = pages.overview(
                    str(app.clean_dir), app.index.summary, app.index.counts, app.decided()
                )
                return self._send(200, body.encode(), "text/html; charset=utf-8")
            if url.path.startswith("/q/") and url.path[3:] in KINDS:
                return self._queue(url.path[3:], query)
            if url.path == "/thumb" and "p" in query:
                source = app.eval_thumbs if query.get("src") == ["eval"] else app.thumbs
                data = source.get(query["p"][0])
                if data is None:
                    return self._text(404, "not an image under the dataset root")
                return self._send(200, data, "image/jpeg", cache=True)
            return self._text(404, "not found")

        def _queue(self, kind: str, query: dict) -> None:
            count = app.index.counts[kind]
            last = max(0, (count - 1) // pages.PER_PAGE)
            try:
                page_no = int(query["page"][0]) if "page" in query else None
            except ValueError:
                return self._text(400, "page must be a number")
            if page_no is None:
                page_no = app.first_undecided(kind) // pages.PER_PAGE
            page_no = min(max(page_no, 0), last)
            start = page_no * pages.PER_PAGE
            rows = app.index.rows(kind, start, start + pages.PER_PAGE)
            body = pages.queue_page(
                kind,
                rows,
                page_no,
                app.index.counts,
                app.decided(),
                app.token,
                app.index.faces,
                lambda r: app.store.decision(r["key"]),
                app.rejected,
            )
            self._send(200, body.encode(), "text/html; charset=utf-8")

        def do_POST(self) -> None:  # noqa: N802
            if not self._host_ok():
                return self._text(403, "unexpected Host header")
            if urlsplit(self.path).path != "/decide":
                return self._text(404, "not found")
            token = self.headers.get("X-Review-Token", "")
            if not hmac.compare_digest(token.encode(), app.token.encode()):
                return self._text(403, "missing or wrong session token")
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                return self._text(400, f"body must be 1 to {MAX_BODY} bytes of JSON")
            try:
                payload = json.loads(self.rfile.read(length))
                if not isinstance(payload, dict):
                    raise ValueError("not a JSON object")
                result = app.decide(payload)
            except (ValueError, TypeError) as e:
                return self._text(400, str(e))
            except OSError as e:  # disk full, folder made read-only: say so, keep serving
                return self._text(500, f"not saved: {e.filename or ''} {e.strerror or e}")
            self._send(200, json.dumps(result).encode(), "application/json")

    return Handler


def make_server(app: ReviewApp, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A listening (not yet serving) server for ``app``; ``port`` 0 picks a free one."""
    try:
        httpd = ThreadingHTTPServer((host, port), _handler(app, set()))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise FacecleanError(
                f"port {port} on {host} is in use: pick another with --port (0: any free)"
            ) from None
        raise FacecleanError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    httpd.daemon_threads = True
    wildcard = host in ("0.0.0.0", "::", "")
    allowed = None if wildcard else {"127.0.0.1", "localhost", "::1", host}
    httpd.RequestHandlerClass = _handler(app, allowed)
    return httpd


def serve(
    clean_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    data_root: str | Path | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> dict:
    """Serve the review of ``clean_dir`` until interrupted (Ctrl-C, SIGINT).

    Holds the lock of ``review.parquet`` (see :func:`faceclean.outputs.output_lock`) for
    its whole life, so two servers never write one review. ``on_ready`` gets the address
    once the server listens (``port`` 0 picks a free one). Returns what the session did:
    the address, the review file, the items in each queue, and the decisions saved at
    start and at exit (in all, and per queue)."""
    clean_dir = Path(clean_dir)
    check_clean_folder(clean_dir)  # before the lock file is made in a folder it refuses
    with output_lock(clean_dir / REVIEW_FILE):
        app = ReviewApp(clean_dir, data_root)
        at_start = len(app.store.rows)
        httpd = make_server(app, host, port)
        bound = httpd.server_address[1]
        url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/"
        try:  # from the address on: a Ctrl-C right after it still ends the session well
            with _term_as_interrupt():
                if on_ready:
                    on_ready(url)
                httpd.serve_forever()
        except KeyboardInterrupt:
            pass  # the way a review ends: every decision is already saved
        finally:
            httpd.server_close()
        return {
            "address": url,
            "review": str(clean_dir / REVIEW_FILE),
            "queues": {k: int(v) for k, v in app.index.counts.items()},
            "decisions_at_start": at_start,
            "decisions": len(app.store.rows),
            "decided_by_queue": app.decided(),
        }


@contextlib.contextmanager
def _term_as_interrupt():
    """SIGTERM ends the review as Ctrl-C does (a batch job's end, `kill PID`, or a server
    started in the background, where SIGINT is ignored), so its summary is still given."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
