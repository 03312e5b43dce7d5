"""`faceclean search`: the joint search over cleaning, loss and backbone (Alg. 1 of Zhang et
al. 2022).

For T steps: the controller samples B combinations; each trial cleans the data with its
thresholds, trains its backbone with its loss, and scores ACC on the validation set; the
reward R = ACC * (MACs / TARGET)^alpha (TARGET = the base backbone's MACs; alpha < 0
penalises bigger models) updates the controller with PPO. ``method="random"`` samples
uniformly on the same trial function, for an honest comparison.

Everything lands in the run folder: ``trials.jsonl`` (one line per finished trial, shaped
like the paper's search log), ``state.pt`` (controller, optimiser, baseline, RNG, step and
the batch in flight), written atomically after every change, so ``resume=True`` continues
from the last finished trial: the in-flight batch is restored, finished trials are not run
again, and the final log equals an uninterrupted run with the same seed. A trial that
raises (diverges, runs out of memory) is logged with its error and reward ``failure_reward``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError
from faceclean.search.controller import PPO, Controller
from faceclean.search.methods import GaussianSearch, RayPool, tpe_study
from faceclean.search.space import TOKENS, SearchSpace, difficulty

TrialFn = Callable[[dict, int], dict]
METHODS = ("ppo", "random", "tpe", "gaussian")


def reward(acc: float, macs: float, target_macs: float, alpha: float) -> float:
    """R = ACC * (MACs / TARGET)^alpha."""
    return acc * (macs / target_macs) ** alpha


def _run_trial(trial_fn: TrialFn, combo: dict, seed: int) -> dict:
    t0 = time.perf_counter()
    try:
        out = dict(trial_fn(combo, seed))
        out["error"] = None
    except Exception as e:  # a failed trial is data, not the end of the search
        out = {"acc": None, "macs": None, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    out["wall_s"] = time.perf_counter() - t0
    return out


@dataclass
class SearchResult:
    run_dir: Path
    trials: list[dict]

    def top(self, k: int = 5) -> list[dict]:
        ok = [t for t in self.trials if t["error"] is None]
        return sorted(ok, key=lambda t: -t["reward"])[:k]


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "trials.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def search(
    space: SearchSpace,
    trial_fn: TrialFn,
    run_dir: str | Path,
    steps: int = 10,
    batch: int = 4,
    *,
    method: str = "ppo",
    seed: int = 0,
    alpha: float = -0.07,
    target_macs: float = 1.0,
    failure_reward: float = 0.0,
    workers: int = 1,
    resume: bool = False,
    lr: float = 5e-4,
    on_trial: Callable[[dict], None] | None = None,
    ray_address: str | None = None,
) -> SearchResult:
    """Run (or resume) a search; see the module docstring. ``trial_fn(combo, seed)`` returns
    at least ``acc`` and ``macs``; it must be a picklable module-level callable when
    ``workers > 1`` (a local process pool runs the batch in parallel) or with
    ``ray_address`` (Ray tasks on a cluster; "local" starts a local Ray instance)."""
    if method not in METHODS:
        raise FacecleanError(f"unknown search method {method!r}; use {', '.join(METHODS)}")
    run_dir = Path(run_dir)
    state_path = run_dir / "state.pt"
    log_path = run_dir / "trials.jsonl"
    if run_dir.exists() and (state_path.exists() or log_path.exists()) and not resume:
        raise FacecleanError("holds a search already; pass --resume to continue it", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    controller = Controller(space.sizes)
    ppo = PPO(controller, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    gaussian = GaussianSearch(space.sizes)
    step, pending = 0, None
    if resume and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state["space"] != [list(space.choices[t]) for t in TOKENS] or state["method"] != method:
            raise FacecleanError("was run with another search space or method", run_dir)
        ppo.load_state_dict(state["ppo"])
        gen.set_state(state["generator"])
        rng.bit_generator.state = state["numpy_rng"]
        step, pending = state["step"], state["pending"]
        gaussian.mu = np.asarray(state.get("gaussian_mu", gaussian.mu))
    log = read_log(run_dir)
    done = {t["trial"]: t for t in log}
    asked: dict = {}
    if method == "tpe":
        # Finished steps are replayed into a fresh study; the sampler's own random state is
        # not restored, so a resumed TPE search continues well but not bit-identically.
        study, tpe_dists = tpe_study(space, seed, [t for t in log if t["step"] < step])

    def save_state():
        with atomic_path(state_path) as tmp:
            torch.save(
                {
                    "ppo": ppo.state_dict(),
                    "generator": gen.get_state(),
                    "numpy_rng": rng.bit_generator.state,
                    "step": step,
                    "pending": pending,
                    "method": method,
                    "space": [list(space.choices[t]) for t in TOKENS],
                    "gaussian_mu": gaussian.mu.tolist(),
                },
                tmp,
            )

    if ray_address:
        pool = RayPool(ray_address, workers, _run_trial)
    else:
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        while step < steps:
            if pending is None:  # sample this step's batch and persist it before running
                logp = torch.full((batch,), float("nan"))
                if method == "ppo":
                    tokens, logp = controller.sample(batch, gen)
                elif method == "gaussian":
                    tokens = torch.as_tensor(gaussian.sample(batch, rng))
                elif method == "tpe":
                    asked = {b: study.ask(tpe_dists) for b in range(batch)}
                    tokens = torch.tensor(
                        [[asked[b].params[t] for t in TOKENS] for b in range(batch)]
                    )
                else:
                    tokens = torch.as_tensor(
                        np.stack([rng.integers(0, n, batch) for n in space.sizes], 1)
                    )
                pending = {"tokens": tokens.tolist(), "logp": logp.tolist()}
                save_state()
            ids = [step * batch + b for b in range(batch)]
            combos = [space.decode(t) for t in pending["tokens"]]
            todo = [(i, c) for i, c in zip(ids, combos, strict=True) if i not in done]
            seeds = {i: seed * 1_000_003 + i for i, _ in todo}
            if pool is not None:
                futures = {i: pool.submit(_run_trial, trial_fn, c, seeds[i]) for i, c in todo}
                results = ((i, c, futures[i].result()) for i, c in todo)
            else:
                results = ((i, c, _run_trial(trial_fn, c, seeds[i])) for i, c in todo)
            for i, combo, out in results:
                b = i - step * batch
                ok = out["error"] is None and out["acc"] is not None and math.isfinite(out["acc"])
                r = reward(out["acc"], out["macs"], target_macs, alpha) if ok else failure_reward
                data_d, loss_d = difficulty(combo)
                record = {
                    "trial": i,
                    "step": step,
                    "tokens": pending["tokens"][b],
                    "log_prob": pending["logp"][b],
                    **combo,
                    "reward": r,
                    "data_difficulty": data_d,
                    "loss_difficulty": loss_d,
                    "seed": seeds[i],
                    **out,
                }
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                done[i] = record
                if on_trial:
                    on_trial(record)
            rewards = torch.tensor([done[i]["reward"] for i in ids], dtype=torch.float32)
            if method == "ppo":
                ppo.update(torch.tensor(pending["tokens"]), torch.tensor(pending["logp"]), rewards)
            elif method == "gaussian":
                gaussian.update(np.asarray(pending["tokens"]), rewards.numpy())
            elif method == "tpe":
                import optuna

                for b, i in enumerate(ids):
                    if b in asked:
                        study.tell(asked[b], done[i]["reward"])
                    else:  # resumed mid-step: this trial was asked by the killed run
                        study.add_trial(
                            optuna.trial.create_trial(
                                params=dict(zip(TOKENS, pending["tokens"][b], strict=True)),
                                distributions=tpe_dists,
                                value=done[i]["reward"],
                            )
                        )
                asked = {}
            step, pending = step + 1, None
            save_state()
    finally:
        if pool is not None:
            pool.shutdown()
    return SearchResult(run_dir, sorted(done.values(), key=lambda t: t["trial"]))


def run_search(
    embeddings,
    val,
    output,
    *,
    data_root=None,
    steps=10,
    batch=4,
    aspects="all",
    space_file=None,
    method="ppo",
    alpha=-0.07,
    workers=1,
    train_kwargs=None,
    fars=(1e-3, 1e-4, 1e-5),
    retrain_top=0,
    retrain_epochs=5,
    seed=0,
    resume=False,
    console=None,
    ray_address=None,
) -> dict:
    """The CLI's search: real trials (:class:`faceclean.search.trial.FaceTrial`), progress lines,
    plots, and optionally the top-k combinations re-trained for longer."""
    from faceclean.search.plots import plot_search
    from faceclean.search.space import load_space
    from faceclean.search.trial import FaceTrial
    from faceclean.training.backbones import MobileFaceNet, count_macs

    output = Path(output)
    space = load_space(space_file, aspects)
    kwargs = dict(train_kwargs or {})
    trial = FaceTrial(
        str(embeddings),
        str(val),
        str(output),
        str(data_root) if data_root else None,
        kwargs,
        tuple(fars),
    )
    base_macs = count_macs(
        MobileFaceNet(1.0, 1.0, kwargs.get("embedding_size", 128), kwargs.get("input_size", 112))
    )
    seen: list[dict] = read_log(output) if resume else []
    live = None

    def status_table():
        from rich.table import Table

        ok = [t for t in seen if t["error"] is None]
        best = max(ok, key=lambda t: t["reward"], default=None)
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
        table.add_row(
            "best reward",
            "-"
            if best is None
            else f"{best['reward']:.4f} (trial {best['trial']}, ACC {best['acc']:.4f})",
        )
        table.add_row("moving ACC", f"{np.mean(recent):.4f}" if recent else "-")
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
        if live is not None:
            live.update(status_table())

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
        )
    finally:
        if live is not None:
            live.stop()
    plots = plot_search(result.trials, output)
    summary = {
        "trials": len(result.trials),
        "top": result.top(max(retrain_top, 5)),
        "plots": [str(p) for p in plots],
    }
    if retrain_top:
        final = []
        longer = FaceTrial(
            trial.embeddings,
            trial.val,
            str(output / "retrain"),
            trial.data_root,
            {**kwargs, "epochs": retrain_epochs, "max_steps": None},
            trial.fars,
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
        for t in result.top(5):
            table.add_row(
                *[
                    f"{t[c]:.3g}" if isinstance(t[c], float) else str(t[c])
                    for c in ("trial", *TOKENS, "acc", "reward")
                ]
            )
        console.print(table)
        for r in summary.get("retrained", []):
            console.print(f"retrained: ACC {r['retrained_acc']:.4f} -> {r['run_dir']}")
        console.print(f"log: {output / 'trials.jsonl'}; plots: {', '.join(summary['plots'])}")
    return summary
