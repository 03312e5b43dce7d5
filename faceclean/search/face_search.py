"""`faceclean search` on real faces: :func:`run_search` wires :class:`FaceTrial` into the
search loop (:func:`faceclean.search.search_loop.search`, re-exported here with its defaults),
shows a live status table, writes the plots and re-trains the best combinations. Inputs are
fingerprinted into the search state so that a resume on other embeddings, another
validation set or another space is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError
from faceclean.outputs import output_lock, refuse_inputs
from faceclean.search.fidelity import spent
from faceclean.search.search_loop import (
    DEFAULTS,
    METHODS,
    SearchResult,
    check_resume,
    reward,
    search,
)
from faceclean.search.signal import ties
from faceclean.search.space import TOKENS
from faceclean.search.trial_log import read_log

__all__ = [
    "DEFAULTS",
    "METHODS",
    "SearchResult",
    "file_fingerprint",
    "prepare_output",
    "read_log",
    "reward",
    "run_search",
    "search",
]


def file_fingerprint(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's size and its first, middle and last 4 MiB (a GB-sized store is
    fingerprinted in milliseconds; an edit that keeps the size and misses all three chunks
    goes unnoticed), or, for a folder, of every file's relative path and size."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(path)}\0{p.stat().st_size}\n".encode())
        return h.hexdigest()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        for start in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
            f.seek(start)
            h.update(f.read(chunk))
    return h.hexdigest()


# What a search writes into its output folder (and --overwrite deletes; nothing else).
SEARCH_OUTPUTS = (
    "trials.jsonl",
    "state.pt",
    "retrained.json",
    "accuracy.png",
    "tokens.png",
    "difficulty.png",
    "clean",
    "trials",
    "retrain",
    "signal.json",
)


def prepare_output(output: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an output holding a search unless ``resume`` or ``overwrite``; with
    ``overwrite`` delete that search's files (only those: the folder may hold others)."""
    import shutil

    held = [output / n for n in SEARCH_OUTPUTS if (output / n).exists()]
    if resume:
        if not (output / "state.pt").exists():
            raise FacecleanError(
                "holds no search to resume (no state.pt: none, or one stopped before its first "
                "step ended); pass --overwrite to start it again",
                output,
            )
        return
    if output.exists() and not output.is_dir():
        raise FacecleanError("is a file, not a folder", output)
    # A search stopped by its signal check left only signal.json: a re-run (with --force or
    # other settings) may start there, and reuses the check when nothing changed.
    if [p for p in held if p.name != "signal.json"] and not overwrite:
        if not (output / "state.pt").exists():  # --resume would refuse it: say what works
            raise FacecleanError(
                "holds the files of a search stopped before its first step ended (no "
                "state.pt); pass --overwrite to start it again",
                output,
            )
        raise FacecleanError(
            "holds a search already; pass --resume to continue it or --overwrite to replace it",
            output,
        )
    for p in held if overwrite else []:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def run_search(
    embeddings,
    val,
    output,
    *,
    data_root=None,
    steps=DEFAULTS["steps"],
    batch=DEFAULTS["batch"],
    aspects="all",
    space_file=None,
    method=DEFAULTS["method"],
    alpha=DEFAULTS["alpha"],
    workers=1,
    train_kwargs=None,
    fars=(1e-3, 1e-4, 1e-5),
    retrain_top=0,
    retrain_epochs=5,
    seed=DEFAULTS["seed"],
    resume=False,
    console=None,
    ray_address=None,
    controller=None,
    trial_identities=None,
    overwrite=False,
    signal_seeds=0,
    force=False,
    head=None,
) -> dict:
    """The CLI's search: real trials (:class:`faceclean.search.trial.FaceTrial`), a live
    status table, plots, and optionally the top-k combinations re-trained for longer.
    ``controller`` holds keyword arguments of :func:`search` (controller_lr, ppo_epochs,
    entropy, warmup_trials, proposals, gpus_per_trial, explore, mutate, fidelity, debias,
    max_cost); with ``fidelity`` a trial's budget b trains round(b x max_steps) steps.
    ``trial_identities`` (proxy mode) trains each trial on a subset of that many identities
    drawn with ``seed``; with ``train_kwargs["max_steps"]`` a trial is a fixed number of SGD
    steps. An ``output`` that holds a search needs ``resume`` or ``overwrite`` (which
    deletes that search).
    ``signal_seeds`` (0: off; the CLI's default 3) runs the signal check first and stops
    with its one-line reason when the trials measure only noise, unless ``force``; its
    sigma then shows in the status table, the plots and the final table (ties).
    ``head`` (keyword arguments of :class:`faceclean.search.embedding_trial.EmbeddingHeadTrial`,
    ``val_store`` among them) makes every trial the embedding-head level (seconds; ``val``
    then is only needed by ``retrain_top``, which trains real models).
    Returns {"trials", "top", "plots", "signal"[, "retrained"]}."""
    from faceclean.cleaning.filter import _checked_batches
    from faceclean.search.plots import plot_search
    from faceclean.search.space import load_space
    from faceclean.search.trial import FaceTrial
    from faceclean.training.backbones import MobileFaceNet, count_macs

    output = Path(output)
    space = load_space(space_file, aspects)
    scored_on = head["val_store"] if head else val
    inputs = {"embeddings": embeddings, "validation set": scored_on}
    if retrain_top:
        inputs["validation identities (--retrain-top)"] = val
    for name, path in inputs.items():
        if path is None or not Path(path).exists():
            raise FacecleanError(f"{name} not found", path or "(not given)")
    refuse_inputs([output], [p for p in (embeddings, val, scored_on, data_root) if p])
    # What every trial would fail on, refused in one line before any trial: a training
    # store cleaning refuses, more proxy identities than it has, a bad validation store.
    for _ in _checked_batches(embeddings, ("label", "embedding"), 65536):
        pass
    if trial_identities:
        FaceTrial(str(embeddings), "", str(output), identities=trial_identities).subset()
    if head:
        from faceclean.search.embedding_trial import EmbeddingHeadTrial

        EmbeddingHeadTrial(str(embeddings), head["val_store"], str(output)).check_stores()
    output.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(output):  # a second search into the same folder is refused
        prepare_output(output, resume, overwrite)
        fingerprints = {
            "embeddings": file_fingerprint(embeddings),
            "validation set": file_fingerprint(scored_on),
        }
        if head:  # another kind of trial: a resume of a real-trial search is refused
            fingerprints["trial"] = "embedding-head " + json.dumps(head, sort_keys=True)
        kwargs = dict(train_kwargs or {})
        options = dict(controller or {})
        if options.get("fidelity") and not head and not kwargs.get("max_steps"):
            raise FacecleanError("--fidelity maps each trial's budget to --max-steps: give it")
        real = FaceTrial(
            str(embeddings),
            str(val),
            str(output),
            str(data_root) if data_root else None,
            kwargs,
            tuple(fars),
            identities=trial_identities,
            subset_seed=seed,
        )
        trial = real
        if head:
            trial = EmbeddingHeadTrial(
                str(embeddings), work_dir=str(output), fars=tuple(fars),
                identities=trial_identities, subset_seed=seed,
                **{"input_size": kwargs.get("input_size", 112),
                   "embedding_size": kwargs.get("embedding_size", 128), **head},
            )  # fmt: skip
        base_macs = count_macs(
            MobileFaceNet(
                1.0, 1.0, kwargs.get("embedding_size", 128), kwargs.get("input_size", 112)
            )
        )
        seen: list[dict] = read_log(output) if resume else []
        live = None
        noise: dict = {}  # the signal check's verdict, once run
        said_weights: list[bool] = []

        def say_weights(record):
            """Say once how ACC is weighted when the validation set cannot resolve a FAR."""
            used = record.get("acc_weights")
            if said_weights or not console or not used:
                return
            said_weights.append(True)
            left = [f"{f:g}" for f in fars if f"{f:g}" not in used]
            if left:
                formula = " + ".join(f"{w:.2f}·TAR@{f}" for f, w in used.items())
                console.print(
                    f"ACC = {formula}: the validation set's {record['impostor_pairs']:,} "
                    f"impostor pairs cannot resolve FAR {', '.join(left)} (< 1 pair per "
                    "1/FAR), left out and the weights renormalised"
                )

        def status_table():
            from rich.table import Table

            ok = [t for t in seen if t["error"] is None]
            full = [t for t in ok if t.get("budget", 1.0) == 1.0]  # multi-fidelity: trusted
            best = max(full, key=lambda t: t["reward"], default=None)
            recent = [t["acc"] for t in ok[-2 * batch :]]
            step_now = seen[-1]["step"] if seen else 0
            in_step = sum(1 for t in seen if t["step"] == step_now)
            table = Table(title=f"faceclean search ({method}, space {aspects})", show_header=False)
            table.add_row("step", f"{step_now + 1} / {steps}")
            table.add_row("trials done", f"{len(seen)} / {steps * batch}")
            table.add_row(
                "running",
                f"{0 if in_step == batch else batch - in_step} in this step "
                f"({max(1, workers)} at a time)",
            )
            table.add_row("failed", str(len(seen) - len(ok)))
            if options.get("fidelity") or options.get("max_cost"):
                cap = options.get("max_cost")
                table.add_row(
                    "cost (full trials)",
                    f"{spent(seen):.2f}" + (f" / {cap:g}" if cap else "")
                    + (f"; last trial's budget {seen[-1].get('budget', 1.0):.3g}" if seen else ""),
                )  # fmt: skip
            table.add_row(
                "best reward",
                "-"
                if best is None
                else f"{best['reward']:.4f} (trial {best['trial']}, ACC {best['acc']:.4f})",
            )
            table.add_row("moving ACC", f"{np.mean(recent):.4f}" if recent else "-")
            if noise:
                table.add_row(
                    "trial noise σ",
                    f"{noise['sigma']:.4f} (rewards within 2σ of the best are ties)",
                )
            if seen:
                last = seen[-1]
                table.add_row(
                    "last trial",
                    f"#{last['trial']}: "
                    + (
                        f"failed: {last['error'][:60]}"
                        if last["error"]
                        else f"ACC {last['acc']:.4f}, reward {last['reward']:.4f}, "
                        f"{last['wall_s']:.1f} s"
                    ),
                )
            return table

        def report(record):
            seen.append(record)
            if record["error"] is None:
                say_weights(record)
            if live is not None:
                live.update(status_table())

        def on_signal(verdict):
            noise.update(verdict)
            for t in verdict["trials"]:
                if t["error"] is None:
                    say_weights(t)
            if console:
                console.print(verdict["message"])

        if resume:  # a mismatched resume: its one line, before the status table shows
            check_resume(output, space, method, batch, fingerprints)
        if console:
            from rich.live import Live

            live = Live(status_table(), console=console, refresh_per_second=4)
            live.start()
        try:
            result = search(
                space,
                trial,
                output,
                steps,
                batch,
                method=method,
                seed=seed,
                alpha=alpha,
                target_macs=base_macs,
                workers=workers,
                resume=resume,
                on_trial=report,
                ray_address=ray_address,
                fingerprints=fingerprints,
                signal_seeds=signal_seeds,
                force=force,
                on_signal=on_signal,
                **options,
            )
        finally:
            if live is not None:
                live.stop()
                if not console.is_terminal:
                    console.line()  # Live's last frame ends without a newline in a log file
        if result.trials and all(t["error"] is not None for t in result.trials):
            # A search of nothing but failures has no answer: say why instead of exit 0.
            raise FacecleanError(
                f"every one of the {len(result.trials)} trials failed; the first: "
                f"{result.trials[0]['error']} (log kept in trials.jsonl)",
                output,
            )
        sigma = noise.get("sigma")
        plots = plot_search(result.trials, output, result.entropy, noise=noise or None)
        summary = {
            "trials": len(result.trials),
            "top": result.top(max(retrain_top, 5)),
            "plots": [str(p) for p in plots],
            "signal": noise or None,
        }
        if retrain_top:
            final = []
            longer = FaceTrial(
                real.embeddings,
                real.val,
                str(output / "retrain"),
                real.data_root,
                {**kwargs, "epochs": retrain_epochs, "max_steps": None},
                real.fars,
            )
            for rank, t in enumerate(result.top(retrain_top)):
                combo = {k: t[k] for k in TOKENS}
                out = longer(combo, seed, run_name=f"top{rank + 1}")
                final.append(
                    {
                        **combo,
                        "search_reward": t["reward"],
                        "retrained_acc": out["acc"],
                        "macs": out["macs"],
                        "run_dir": out["run_dir"],
                    }
                )
            summary["retrained"] = final
            with atomic_path(output / "retrained.json") as tmp:
                tmp.write_text(json.dumps(final, indent=2))
        if console:
            from rich.table import Table

            table = Table(title=f"faceclean search: top combinations ({method})")
            # Short headers keep all twelve columns readable in an 80-column terminal.
            for col in ("#", "τ_in", "τ_ex", "m1", "m2", "m3", "s_p", "s_n", "D", "W", "ACC", "R"):
                table.add_column(col, no_wrap=True)
            top = result.top(5)
            tied = ties([t["reward"] for t in top], sigma)
            for t, tie in zip(top, tied, strict=True):
                cells = [f"{t[c]:.3g}" if isinstance(t[c], float) else str(t[c])
                         for c in ("trial", *TOKENS, "acc", "reward")]  # fmt: skip
                table.add_row(*cells[:-1], cells[-1] + ("=" if tie else ""))
            console.print(table)
            if sigma is not None and sum(tied) > 1:
                console.print(
                    f"=: {sum(tied)} combinations within 2σ = {2 * sigma:.4f} of the best "
                    "reward: ties, not a preference (σ: the signal check's trial noise)"
                )
            for r in summary.get("retrained", []):
                console.print(f"retrained: ACC {r['retrained_acc']:.4f} -> {r['run_dir']}")
            console.print(f"log: {output / 'trials.jsonl'}; plots: {', '.join(summary['plots'])}")
        return summary
