"""`faceclean search`: the joint search over cleaning, loss and backbone (Alg. 1 of Zhang et
al. 2022).

For T steps: the controller samples B combinations; each trial cleans the data with its
thresholds, trains its backbone with its loss, and scores ACC on the validation set; the
reward R = ACC * (MACs / TARGET)^alpha (TARGET = the base backbone's MACs; alpha < 0
penalises bigger models) updates the controller with PPO. The first ``warmup_trials``
trials of PPO are drawn uniformly (PPO learns from them off-policy: their sampling
probability is the uniform one). The controller only draws combinations not tried yet, and
once 2 B trials have finished it proposes ``proposals`` x B of them and the B that a
reward predictor (kernel ridge on every finished trial, :mod:`faceclean.search.predictor`)
rates best are run: trials are expensive and the on-policy controller forgets what its
past batches taught, the predictor does not. PPO learns from what was run, with the
policy's own probabilities (the screening is not in the ratio: measured to help, not
derived). ``method="random"``, ``"tpe"`` (Optuna, batched: ask B, tell B) and
``"gaussian"`` run on the same trial function and budget.

Everything lands in the run folder: ``trials.jsonl`` (one line per finished trial, shaped
like the paper's search log, with the policy entropy that sampled it), ``state.pt`` (JSON
plus tensors, see :mod:`faceclean.search.state`: controller, optimiser, RNG, step, the batch
in flight, the entropy per step, fingerprints of the inputs), written atomically after every
change, so ``resume=True`` continues from the last finished trial: the in-flight batch is
restored, finished trials are not run again, and the final log equals an uninterrupted run
with the same seed. A trial that raises is logged with its error and ``failure_reward``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceclean.errors import FacecleanError
from faceclean.search.controller import PPO, Controller, one_thread
from faceclean.search.defaults import DEFAULTS, METHODS
from faceclean.search.fidelity import BiasModel, Schedule, spent
from faceclean.search.methods import (
    GaussianSearch,
    make_pool,
    mutations,
    run_trial,
    tpe_study,
    uniform_novel,
)
from faceclean.search.predictor import screen
from faceclean.search.signal import run_signal_check
from faceclean.search.space import TOKENS, SearchSpace, difficulty
from faceclean.search.state import load_state, save_state
from faceclean.search.trial_log import append_record, read_log

TrialFn = Callable[[dict, int], dict]
__all__ = ["DEFAULTS", "METHODS", "SearchResult", "read_log", "reward", "search"]


def reward(acc: float, macs: float, target_macs: float, alpha: float) -> float:
    """R = ACC * (MACs / TARGET)^alpha."""
    return acc * (macs / target_macs) ** alpha


@dataclass
class SearchResult:
    run_dir: Path
    trials: list[dict]
    entropy: list[float]
    signal: dict | None = None  # the signal check (faceclean.search.signal), when run

    def top(self, k: int = 5) -> list[dict]:
        """The k best finished trials by reward (of a multi-fidelity search: at full budget)."""
        ok = [t for t in self.trials if t["error"] is None and t.get("budget", 1.0) == 1.0]
        return sorted(ok, key=lambda t: -t["reward"])[:k]


def search(
    space: SearchSpace,
    trial_fn: TrialFn,
    run_dir: str | Path,
    steps: int = DEFAULTS["steps"],
    batch: int = DEFAULTS["batch"],
    *,
    method: str = DEFAULTS["method"],
    seed: int = DEFAULTS["seed"],
    alpha: float = DEFAULTS["alpha"],
    target_macs: float = 1.0,
    failure_reward: float = 0.0,
    workers: int = 1,
    resume: bool = False,
    controller_lr: float = DEFAULTS["controller_lr"],
    ppo_epochs: int = DEFAULTS["ppo_epochs"],
    entropy: float = DEFAULTS["entropy"],
    warmup_trials: int = DEFAULTS["warmup_trials"],
    proposals: int = DEFAULTS["proposals"],
    on_trial: Callable[[dict], None] | None = None,
    ray_address: str | None = None,
    gpus_per_trial: float = 1.0,
    fingerprints: dict | None = None,
    ppo_options: dict | None = None,
    signal_seeds: int = 0,
    force: bool = False,
    on_signal: Callable[[dict], None] | None = None,
    explore: float = 0.0,
    fidelity: bool = False,
    max_cost: float | None = None,
    eta: int = 3,
    rungs: int = 3,
    debias: bool = False,
    mutate: float = 0.0,
) -> SearchResult:
    """Run (or resume) a search of ``steps`` x ``batch`` trials; see the module docstring.

    ``trial_fn(combo, seed)`` returns at least ``acc`` and ``macs``; it must be a picklable
    module-level callable when ``workers > 1`` (a spawn-based local process pool runs the
    batch in parallel) or with ``ray_address`` (Ray tasks; "local" starts a local Ray
    instance; ``gpus_per_trial`` = 0.5 runs two trials per GPU). ``fingerprints`` (name ->
    str) identify the inputs; a resume with other fingerprints is refused. ``ppo_options``
    (clip, target_kl, entropy_floor, advantage) go to :class:`PPO`, for experiments, but
    "predictor" ("kernel", the default, or "ridge"), which picks the screening predictor.
    ``proposals`` (>= 1) is how many combinations per trial PPO draws for the screening.
    ``signal_seeds`` (0: off, else >= 2) runs the signal check of
    :mod:`faceclean.search.signal` first (its verdict goes to ``on_signal`` and into the
    result); a failed check raises FacecleanError with its one-line reason unless ``force``.
    ``explore`` (in [0, 1)) is the share of each PPO batch after the warm-up drawn uniformly
    among untried combinations (rounded to whole trials; learned from off-policy, like the
    warm-up), the rest screened from the policy's draws. ``mutate`` (in [0, 1), with
    ``explore`` + ``mutate`` < 1) is the share of each such batch (rounded, taken from the
    policy's part, not the uniform one) that are one- or two-token mutations of the best
    finished combination so far, untried and unscreened: exploits what a uniform draw found
    (PPO learns from them with the policy's own log-probs of them).
    ``fidelity=True`` runs successive halving (:mod:`faceclean.search.fidelity`, ``eta``,
    ``rungs``): ``trial_fn(combo, seed, budget=b)`` with b in (0, 1] the trial's share of a
    full trial, logged with the trial with its rung and bracket; the method's sampler draws
    the rung-0 combinations (PPO, its predictor, TPE and Gaussian learn from rung-0 rewards,
    the same fidelity; PPO's elite set from full-budget ones), promotions re-run the best at
    eta times the budget. ``max_cost`` stops the search once the trials' summed budgets
    reach that many full trials (each trial costs 1 without ``fidelity``); ``steps`` still
    bounds it. :meth:`SearchResult.top` then ranks the full-budget trials. ``debias`` (with
    ``fidelity``) learns what short trials get wrong from the promoted pairs
    (:class:`faceclean.search.fidelity.BiasModel`): promotions rank, and the samplers
    and PPO's predictor learn from, rewards corrected to full budget (the predictor: each
    combination's longest trial, corrected).
    """
    if method not in METHODS:
        raise FacecleanError(f"unknown search method {method!r}; use {', '.join(METHODS)}")
    if min(steps, batch, workers, ppo_epochs, proposals) < 1 or warmup_trials < 0:
        raise FacecleanError("steps, batch, workers, ppo_epochs and proposals must be >= 1")
    if not (math.isfinite(alpha) and math.isfinite(controller_lr) and controller_lr > 0):
        raise FacecleanError("alpha must be finite and the controller lr > 0")
    if signal_seeds == 1 or signal_seeds < 0:
        raise FacecleanError("the signal check needs >= 2 seeds to measure noise (0: no check)")
    if not 0 <= explore < 1 or (max_cost is not None and not max_cost > 0):
        raise FacecleanError("explore must be in [0, 1) and max_cost > 0")
    if not 0 <= mutate < 1 or explore + mutate >= 1:
        raise FacecleanError("mutate must be in [0, 1) and explore + mutate < 1")
    if fidelity and (eta < 2 or rungs < 1):
        raise FacecleanError("successive halving needs eta >= 2 and rungs >= 1")
    if debias and not fidelity:
        raise FacecleanError("debias corrects short trials: it needs fidelity=True")
    schedule = Schedule(batch, eta, rungs) if fidelity else None
    bias = BiasModel(space.sizes) if debias else None
    run_dir = Path(run_dir)
    state_path, log_path = run_dir / "state.pt", run_dir / "trials.jsonl"
    if (state_path.exists() or log_path.exists()) and not resume:
        raise FacecleanError("holds a search already; pass --resume to continue it", run_dir)
    if resume:  # before the signal check: a mismatched resume costs no trial
        check_resume(run_dir, space, method, batch, fingerprints)
    run_dir.mkdir(parents=True, exist_ok=True)
    signal = None
    # A resumed search that was started without the check is not stopped by one now.
    if signal_seeds and (not resume or (run_dir / "signal.json").exists()):
        signal = run_signal_check(
            space, trial_fn, run_dir, signal_seeds, seed, fingerprints,
            {"budget": 1.0} if fidelity else None,
        )  # fmt: skip
        if on_signal:
            on_signal(signal)
        if not signal["passed"] and not force:
            raise FacecleanError(signal["message"], run_dir)
    torch.manual_seed(seed)
    controller = Controller(space.sizes)
    ppo_options = dict(ppo_options or {})
    predictor = ppo_options.pop("predictor", "kernel")  # experiments: "ridge"
    ppo = PPO(controller, lr=controller_lr, epochs=ppo_epochs, entropy=entropy, **ppo_options)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    gaussian = GaussianSearch(space.sizes)
    space_list = [list(space.choices[t]) for t in TOKENS]
    fingerprints = dict(fingerprints or {})
    step, pending, entropies = 0, None, []
    if resume and state_path.exists():
        meta, tensors = load_state(state_path)
        _check_resume(meta, state_path, method, space_list, batch, fingerprints)
        ppo.load_state_dict(tensors["ppo"])
        gen.set_state(tensors["generator"])
        rng.bit_generator.state = meta["numpy_rng"]
        step, pending, entropies = meta["step"], meta["pending"], meta["entropy"]
        gaussian.mu = np.asarray(meta["gaussian_mu"])
    log = read_log(run_dir, repair=True)
    done = {t["trial"]: t for t in log}
    missing = [i for i in range(step * batch) if i not in done]
    if missing:  # the state is past trials the log does not hold: not this search's log
        raise FacecleanError(
            f"lacks trials {missing[0]}-{missing[-1]} of finished steps; the log and "
            "state.pt are not from one search",
            log_path,
        )
    asked: dict = {}
    if method == "tpe":
        # Finished steps are replayed into a fresh study; the sampler's own random state is
        # not restored, so a resumed TPE search continues well but not bit-identically.
        replay = [t for t in log if t["step"] < step and t.get("rung", 0) == 0]
        study, tpe_dists = tpe_study(space, seed, replay)
    warmup_steps = math.ceil(warmup_trials / batch) if method == "ppo" else 0
    uniform_logp = [-math.log(n) for n in space.sizes]

    def persist():
        meta = {
            "step": step,
            "batch": batch,
            "pending": pending,
            "method": method,
            "space": space_list,
            "numpy_rng": rng.bit_generator.state,
            "gaussian_mu": gaussian.mu.tolist(),
            "entropy": entropies,
            "fingerprints": fingerprints,
        }
        save_state(state_path, meta, {"ppo": ppo.state_dict(), "generator": gen.get_state()})

    pool = make_pool(workers, ray_address, gpus_per_trial)
    try:
        while step < steps and (max_cost is None or spent(done) < max_cost - 1e-9):
            bracket, rung, _ = schedule.locate(step) if schedule else (None, 0, 0)
            if pending is None and rung > 0:  # re-run the previous rung's best, longer
                parents = schedule.promoted(step, done, bias)
                pending = {
                    "tokens": [t["tokens"] for t in parents],
                    "logp": None,
                    "predicted": None,
                    "parents": [t["trial"] for t in parents],
                }
                entropies.append(None)
                persist()
            if pending is None:  # sample this step's batch and persist it before running
                fresh = schedule.fresh_steps_before(step) if schedule else step
                tokens, logp, h = _sample(method, fresh < warmup_steps, batch, space, rng)
                predicted = None
                if tokens is None and method == "ppo":
                    history = [done[i] for i in sorted(done) if done[i].get("rung", 0) == 0]
                    if bias:  # each combination's best estimate of its full-budget reward
                        est = bias.fit(done).estimates(done)
                        history = [t | {"reward": est[t["trial"]]} for t in history]
                    tried = {tuple(t["tokens"]) for t in done.values()}
                    n_uniform = min(round(explore * batch), batch - 1)
                    n_mut = min(round(mutate * batch), batch - 1 - n_uniform) if history else 0
                    tokens, logp, h, predicted = _ppo_batch(
                        controller, gen, history, tried, batch - n_uniform - n_mut,
                        proposals, space.sizes, predictor, seed + step,
                    )  # fmt: skip
                    if n_mut:  # exploit the best so far: its near neighbours, unscreened
                        tried |= {tuple(t) for t in tokens.tolist()}
                        best = max(history, key=lambda t: t["reward"])["tokens"]
                        near = torch.as_tensor(mutations(best, space.sizes, n_mut, tried, rng))
                        with one_thread(), torch.no_grad():
                            near_logp = controller.evaluate(near)[0]
                        tokens, logp = torch.cat([tokens, near]), torch.cat([logp, near_logp])
                        predicted = None if predicted is None else predicted + [None] * n_mut
                    if n_uniform:  # the exploration share: uniform, untried, unscreened
                        tried |= {tuple(t) for t in tokens.tolist()}
                        extra = uniform_novel(space.sizes, n_uniform, tried, rng)
                        tokens = torch.cat([tokens, torch.as_tensor(extra)])
                        logp = torch.cat([logp, torch.tensor([uniform_logp] * n_uniform)])
                        predicted = None if predicted is None else predicted + [None] * n_uniform
                elif tokens is None and method == "gaussian":
                    tokens = gaussian.sample(batch, rng)
                elif tokens is None:  # tpe
                    asked = {b: study.ask(tpe_dists) for b in range(batch)}
                    tokens = [[asked[b].params[t] for t in TOKENS] for b in range(batch)]
                if method == "ppo" and logp is None:  # a warm-up batch: uniform sampler
                    logp = [uniform_logp] * batch
                    h = controller.uniform_entropy()
                entropies.append(h)
                tokens = torch.as_tensor(np.asarray(tokens)).tolist()
                logp = torch.as_tensor(logp).tolist() if logp is not None else None
                pending = {"tokens": tokens, "logp": logp, "predicted": predicted}
                persist()
            ids = [step * batch + b for b in range(batch)]
            combos = [space.decode(t) for t in pending["tokens"]]
            todo = [(i, c) for i, c in zip(ids, combos, strict=True) if i not in done]
            seeds = {i: seed * 1_000_003 + i for i, _ in todo}
            extra = (schedule.budget(rung),) if schedule else ()
            if pool is not None:
                futures = {
                    i: pool.submit(run_trial, trial_fn, c, seeds[i], *extra) for i, c in todo
                }
                results = ((i, c, futures[i].result()) for i, c in todo)
            else:
                results = ((i, c, run_trial(trial_fn, c, seeds[i], *extra)) for i, c in todo)
            for i, combo, out in results:
                b = i - step * batch
                ok = out["error"] is None and out["acc"] is not None and math.isfinite(out["acc"])
                r = reward(out["acc"], out["macs"], target_macs, alpha) if ok else failure_reward
                data_d, loss_d = difficulty(combo, out.get("tau_intra_chosen"))
                parents = pending.get("parents")
                record = {
                    "trial": i,
                    "step": step,
                    "tokens": pending["tokens"][b],
                    "log_prob": sum(pending["logp"][b]) if pending["logp"] else None,
                    "predicted_reward": (pending.get("predicted") or [None] * batch)[b],
                    **combo,
                    "reward": r,
                    "data_difficulty": data_d,
                    "loss_difficulty": loss_d,
                    "policy_entropy": entropies[step],
                    "seed": seeds[i],
                    **out,
                }
                if signal:  # the trial noise measured before the search, in every line
                    record["trial_sigma"] = signal["sigma"]
                if schedule:
                    record |= {
                        "budget": schedule.budget(rung),
                        "rung": rung,
                        "bracket": bracket,
                        "promoted_from": parents[b] if parents else None,
                    }
                append_record(log_path, record)
                done[i] = record
                if on_trial:
                    on_trial(record)
            learn = [done[i]["reward"] for i in ids]
            if bias and rung == 0:  # learn from the short rewards corrected to full budget
                learn = bias.fit(done).correct(schedule.budget(0), pending["tokens"], learn)
            rewards = torch.tensor(np.asarray(learn), dtype=torch.float32)
            tokens = torch.tensor(pending["tokens"])
            if rung > 0:  # promotions teach the samplers nothing but PPO's elite set
                if method == "ppo" and rung == schedule.rungs - 1:
                    ppo.add_elite(tokens, rewards)
            elif method == "ppo":
                with one_thread():
                    ppo.update(tokens, torch.tensor(pending["logp"]), rewards)
            elif method == "gaussian":
                gaussian.update(np.asarray(pending["tokens"]), rewards.numpy())
            elif method == "tpe":
                _tell_tpe(study, tpe_dists, asked, pending, [float(v) for v in learn])
                asked = {}
            step, pending = step + 1, None
            persist()
    finally:
        if pool is not None:
            pool.shutdown()
    trials = sorted(done.values(), key=lambda t: t["trial"])
    return SearchResult(run_dir, trials, entropies, signal)


def _ppo_batch(controller, gen, history, tried, n, proposals, sizes, predictor, entropy_seed):
    """PPO's ``n`` new combinations: ``proposals`` x n untried draws of the policy screened
    by the reward predictor fitted on ``history`` once it holds 2 n trials (else n draws).
    Returns (tokens [n, T], per-token log-probs [n, T], policy entropy, predicted or None)."""
    predicted = None
    with one_thread():
        k = proposals * n if len(history) >= 2 * n else n
        tokens, logp = controller.sample_novel(k, tried, gen)
        h = controller.entropy(64, torch.Generator().manual_seed(entropy_seed))
    if k > n:  # screen the proposals with the reward predictor
        pick, predicted = screen(tokens.numpy(), history, controller.sizes, n, predictor)
        pick = torch.as_tensor(pick)
        tokens, logp = tokens[pick], logp[pick]
    return tokens, logp, h, predicted


def _sample(method: str, warmup: bool, batch: int, space: SearchSpace, rng):
    """Uniform token indices for ``random`` and PPO's warm-up: (tokens, None, None); else
    (None, None, None) for the method's own sampler."""
    if method == "random" or warmup:
        tokens = np.stack([rng.integers(0, n, batch) for n in space.sizes], 1)
        return tokens, None, None
    return None, None, None


def check_resume(run_dir, space: SearchSpace, method: str, batch: int, fingerprints) -> None:
    """Refuse, before anything runs or prints, a resume of ``run_dir`` with another space,
    method, batch or inputs than its state records (nothing to check without a state)."""
    state_path = Path(run_dir) / "state.pt"
    if state_path.exists():
        space_list = [list(space.choices[t]) for t in TOKENS]
        meta, _ = load_state(state_path)
        _check_resume(meta, state_path, method, space_list, batch, dict(fingerprints or {}))


def _check_resume(meta, path, method, space_list, batch, fingerprints) -> None:
    if meta["space"] != space_list:
        raise FacecleanError("was run with another search space; resume with the same one", path)
    if meta["method"] != method:
        raise FacecleanError(f"was run with --method {meta['method']}, not {method}", path)
    if meta["batch"] != batch:
        raise FacecleanError(
            f"was run with --batch {meta['batch']}; resume with the same --batch", path
        )
    recorded = meta.get("fingerprints", {})
    changed = [
        k
        for k in sorted(set(recorded) | set(fingerprints))
        if recorded.get(k) != fingerprints.get(k)
    ]
    if changed:
        raise FacecleanError(
            f"the {', '.join(changed)} differ from the ones this search was run on; "
            "start a new search (another --output, or --overwrite)",
            path,
        )


def _tell_tpe(study, dists, asked, pending, rewards) -> None:
    import optuna

    for b, value in enumerate(rewards):
        if b in asked:
            study.tell(asked[b], value)
        else:  # resumed mid-step: this trial was asked by the killed run
            study.add_trial(
                optuna.trial.create_trial(
                    params=dict(zip(TOKENS, pending["tokens"][b], strict=True)),
                    distributions=dists,
                    value=value,
                )
            )
