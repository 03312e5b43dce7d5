"""`faceclean search` and `faceclean demo`."""

from __future__ import annotations

from pathlib import Path

import click

from faceclean.cli.common import Finite, OneLineUsage, console, main, record_summary

# Not faceclean.search.search_loop: `faceclean --help` must not import torch.
from faceclean.search.defaults import DEFAULTS as _D
from faceclean.search.defaults import METHODS

_POS = click.IntRange(min=1)
_NONNEG = click.IntRange(min=0)


def _noise_seeds(ctx, param, value: int) -> int:
    if value == 1:
        raise click.BadParameter("1 seed cannot measure noise; use >= 2, or 0 to skip")
    return value


@main.command("search", cls=OneLineUsage)
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option(
    "--val",
    type=click.Path(path_type=Path),
    help="Validation identities (folder or list) that score each trial (needed unless "
    "--trial embedding-head without --retrain-top).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image root of the training set [default: recorded in the embeddings].",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder: trials.jsonl, state.pt, plots, trial runs.",
)
@click.option(
    "--steps", default=_D["steps"], type=_POS, show_default=True, help="Controller steps T."
)
@click.option(
    "--batch",
    default=_D["batch"],
    type=_POS,
    show_default=True,
    help="Trials per step B (fixed for a search: a resume needs the same).",
)
@click.option(
    "--space",
    "aspects",
    default="all",
    show_default=True,
    help="Tokens to search: all, or data/loss/backbone (comma-separated); the rest "
    "stay at the baseline.",
)
@click.option(
    "--space-file",
    type=click.Path(path_type=Path),
    help='TOML file with a [tokens] table of choices; tau_intra may offer "auto" (each such '
    "trial logs the value its data chose as tau_intra_chosen).",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=_D["method"],
    show_default=True,
    help="ppo: the paper's RL controller; random; tpe (Optuna); gaussian: Search-Softmax's "
    "reward-guided Gaussian search (meant for --space loss).",
)
@click.option(
    "--alpha",
    default=_D["alpha"],
    type=Finite(-10, 10),
    show_default=True,
    help="Reward = ACC * (MACs / base MACs)^alpha.",
)
@click.option(
    "--controller-lr",
    default=_D["controller_lr"],
    type=Finite(0, 1, min_open=True),
    show_default=True,
    help="Adam learning rate of the PPO controller.",
)
@click.option(
    "--ppo-epochs",
    default=_D["ppo_epochs"],
    type=click.IntRange(1, 100),
    show_default=True,
    help="PPO epochs per step (at most; a KL early stop may end them sooner).",
)
@click.option(
    "--entropy",
    default=_D["entropy"],
    type=Finite(0, 10),
    show_default=True,
    help="Entropy bonus of the controller (per token, nats).",
)
@click.option(
    "--warmup-trials",
    default=_D["warmup_trials"],
    type=_NONNEG,
    show_default=True,
    help="PPO's first trials drawn uniformly (rounded up to whole steps).",
)
@click.option(
    "--proposals",
    default=_D["proposals"],
    type=click.IntRange(1, 1000),
    show_default=True,
    help="PPO draws K x batch new combinations per step and runs the batch a reward "
    "predictor fitted on every finished trial rates best (1: run the policy's draws).",
)
@click.option(
    "--explore",
    default=0.0,
    type=Finite(0, 1, max_open=True),
    show_default=True,
    help="PPO's share of each batch (after the warm-up) drawn uniformly among untried "
    "combinations, unscreened: insurance against a narrow optimum the controller misses.",
)
@click.option(
    "--mutate",
    default=0.0,
    type=Finite(0, 1, max_open=True),
    show_default=True,
    help="PPO's share of each batch (after the warm-up, taken from the policy's part) that "
    "are 1-2 token mutations of the best combination so far: exploits what exploration found.",
)
@click.option(
    "--fidelity",
    is_flag=True,
    help="Multi-fidelity search: successive halving (eta 3, 3 rungs): each bracket trains 9 B "
    "combinations for 1/9 of --max-steps, the best 3 B for 1/3, the best B for all of it; "
    "the controller (or random/TPE) proposes the first rung. Each trial logs its budget.",
)
@click.option(
    "--debias",
    is_flag=True,
    help="With --fidelity: learn how short trials under- or over-rate combinations from the "
    "promoted ones (measured at two budgets) and promote, and learn from, short rewards "
    "corrected to full budget.",
)
@click.option(
    "--max-cost",
    type=Finite(0, 1e9, min_open=True),
    help="Stop once the trials' summed budgets reach this many full trials "
    "(each trial costs 1 without --fidelity); --steps still bounds the search.",
)
@click.option(
    "--workers",
    default=1,
    type=click.IntRange(1, 1024),
    show_default=True,
    help="Trials run in parallel.",
)
@click.option(
    "--gpus-per-trial",
    default=1.0,
    type=Finite(0, 64, min_open=True),
    show_default=True,
    help="With --ray-address on GPUs: 0.5 runs at most two trials per GPU.",
)
@click.option(
    "--trial",
    "trial_kind",
    type=click.Choice(["real", "embedding-head"]),
    default="real",
    show_default=True,
    help="What a trial trains: real = a backbone on the images; embedding-head = a small MLP "
    "(depth/width from D/W) on the extractor's embeddings with the trial's cleaning and loss, "
    "scored on --val-store (seconds per trial on a CPU).",
)
@click.option(
    "--val-store",
    type=click.Path(path_type=Path),
    help="Embeddings of the validation identities (same extractor) for embedding-head "
    "trials; with --check-fidelity it adds that level to the check.",
)
@click.option(
    "--head-steps",
    default=300,
    type=_POS,
    show_default=True,
    help="SGD steps of a full embedding-head trial (batch 256, lr 0.01, cosine).",
)
@click.option("--input-size", default=112, type=click.IntRange(32, 1024), show_default=True)
@click.option("--embedding-size", default=128, type=_POS, show_default=True)
@click.option(
    "--epochs", default=1, type=_POS, show_default=True, help="Training epochs per trial."
)
@click.option("--max-steps", type=_POS, help="Training steps per trial (fixed budget).")
@click.option(
    "--trial-identities",
    type=click.IntRange(min=2),
    help="Proxy mode: each trial trains on a seeded subset of this many identities.",
)
@click.option(
    "--batch-size",
    default=64,
    type=click.IntRange(min=2),
    show_default=True,
    help="Images per training step of each trial (BatchNorm needs two).",
)
@click.option(
    "--lr",
    default=0.1,
    type=Finite(0, 100, min_open=True),
    show_default=True,
    help="Learning rate of each trial's training.",
)
@click.option(
    "--far",
    "fars",
    multiple=True,
    type=Finite(0, 1, min_open=True),
    default=(1e-3, 1e-4, 1e-5),
    show_default=True,
    help="FARs of ACC (weights 0.5/0.25/0.25 for three).",
)
@click.option(
    "--retrain-top",
    default=0,
    type=_NONNEG,
    show_default=True,
    help="Re-train the k best combinations for --retrain-epochs.",
)
@click.option("--retrain-epochs", default=5, type=_POS, show_default=True)
@click.option("--seed", default=_D["seed"], type=_NONNEG, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the search in --output.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh in an --output that holds a search (its log, state, plots, "
    "cleanings and trial runs are deleted).",
)
@click.option(
    "--check-fidelity",
    is_flag=True,
    help="Instead of searching: train --fidelity-combos random combinations at 1/9, 1/3 and "
    "all of --max-steps and report how well each cheap level ranks them like the full one "
    "(Spearman rho, bootstrap interval) and the cheapest level whose ranking holds.",
)
@click.option(
    "--fidelity-combos",
    default=8,
    type=click.IntRange(3, 10_000),
    show_default=True,
    help="Combinations the fidelity check trains at every level.",
)
@click.option(
    "--signal-seeds",
    default=3,
    type=click.IntRange(min=0),
    callback=_noise_seeds,
    show_default=True,
    help="Before searching, train the baseline combination and the space's centre at this "
    "many seeds, measure the trial noise σ and compare ACC with chance; stop when the trials "
    "measure only noise (0: skip the check; 1 cannot measure noise).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Search even when the signal check finds no signal above noise and chance.",
)
@click.option(
    "--ray-address",
    help="Run trials as Ray tasks on this cluster ('local': a "
    "local Ray instance); one GPU per trial when the cluster has GPUs.",
)
def search_cmd(
    embeddings,
    val,
    data,
    output,
    steps,
    batch,
    aspects,
    space_file,
    method,
    alpha,
    controller_lr,
    ppo_epochs,
    entropy,
    warmup_trials,
    proposals,
    explore,
    mutate,
    fidelity,
    debias,
    max_cost,
    workers,
    gpus_per_trial,
    trial_kind,
    val_store,
    head_steps,
    input_size,
    embedding_size,
    epochs,
    max_steps,
    trial_identities,
    batch_size,
    lr,
    fars,
    retrain_top,
    retrain_epochs,
    seed,
    resume,
    overwrite,
    check_fidelity,
    fidelity_combos,
    signal_seeds,
    force,
    ray_address,
):
    """Jointly search cleaning thresholds, margin loss and backbone (RL controller + PPO)."""
    from faceclean.search.face_search import run_search

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    head = {"val_store": str(val_store), "steps": head_steps} if val_store else None
    if trial_kind == "embedding-head" and not val_store:
        raise click.UsageError("--trial embedding-head needs --val-store (validation embeddings)")
    if val_store and trial_kind == "real" and not check_fidelity:
        raise click.UsageError("--val-store is read by --trial embedding-head or --check-fidelity")
    if val is None and (trial_kind == "real" or check_fidelity or retrain_top):
        raise click.UsageError("--val is needed (validation images for real trials)")
    train_kwargs = {
        "input_size": input_size,
        "embedding_size": embedding_size,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "lr": lr,
        "workers": 0,
    }
    if check_fidelity:
        from faceclean.search.fidelity_check import run_fidelity_check

        run_fidelity_check(
            embeddings, val, output, data_root=data, aspects=aspects, space_file=space_file,
            train_kwargs=train_kwargs, fars=tuple(fars), trial_identities=trial_identities,
            combos=fidelity_combos, seed=seed, console=console, head=head,
        )  # fmt: skip
        return
    summary = run_search(
        embeddings,
        val,
        output,
        data_root=data,
        steps=steps,
        batch=batch,
        aspects=aspects,
        space_file=space_file,
        method=method,
        alpha=alpha,
        workers=workers,
        train_kwargs=train_kwargs,
        trial_identities=trial_identities,
        overwrite=overwrite,
        signal_seeds=signal_seeds,
        force=force,
        head=head if trial_kind == "embedding-head" else None,
        controller={
            "controller_lr": controller_lr,
            "ppo_epochs": ppo_epochs,
            "entropy": entropy,
            "warmup_trials": warmup_trials,
            "proposals": proposals,
            "gpus_per_trial": gpus_per_trial,
            "explore": explore,
            "mutate": mutate,
            "fidelity": fidelity,
            "debias": debias,
            "max_cost": max_cost,
        },
        fars=tuple(fars),
        retrain_top=retrain_top,
        retrain_epochs=retrain_epochs,
        seed=seed,
        resume=resume,
        console=console,
        ray_address=ray_address,
    )
    record_summary("faceclean search", summary)


@main.command(cls=OneLineUsage)
@click.option(
    "-o",
    "--output",
    default="faceclean-demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for every artefact of the demo.",
)
@click.option("--identities", default=40, type=click.IntRange(2, 100_000), show_default=True)
@click.option(
    "--images-per-identity", default=12, type=click.IntRange(2, 10_000), show_default=True
)
@click.option(
    "-m",
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Use this ONNX extractor instead of training a bootstrap one.",
)
@click.option("--steps", default=3, type=_POS, show_default=True, help="Search steps.")
@click.option("--batch", default=2, type=_POS, show_default=True, help="Trials per search step.")
@click.option("--seed", default=0, type=_NONNEG, show_default=True)
def demo(output, identities, images_per_identity, model, steps, batch, seed):
    """The whole pipeline on synthetic faces with known noise, nothing to download:
    bootstrap extractor, extract, clean (scored against the noise), joint search, re-train."""
    from faceclean.demo import run_demo

    result = run_demo(output, identities, images_per_identity, seed, console, model, steps, batch)
    record_summary("faceclean demo", result)
