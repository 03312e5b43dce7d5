"""`faceclean search` and `faceclean demo`."""

from __future__ import annotations

from pathlib import Path

import click

from faceclean.cli.common import console, main


@main.command("search")
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option(
    "--val",
    required=True,
    type=click.Path(path_type=Path),
    help="Validation identities (folder or list) that score each trial.",
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
@click.option("--steps", default=10, show_default=True, help="Controller steps T.")
@click.option("--batch", default=4, show_default=True, help="Trials per step B.")
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
    help="TOML file with a [tokens] table of choices.",
)
@click.option(
    "--method",
    type=click.Choice(["ppo", "random", "tpe", "gaussian"]),
    default="ppo",
    show_default=True,
    help="ppo: the paper's RL controller; random; tpe (Optuna); gaussian: Search-Softmax's "
    "reward-guided Gaussian search (meant for --space loss).",
)
@click.option(
    "--alpha", default=-0.07, show_default=True, help="Reward = ACC * (MACs / base MACs)^alpha."
)
@click.option("--workers", default=1, show_default=True, help="Trials run in parallel.")
@click.option("--input-size", default=112, show_default=True)
@click.option("--embedding-size", default=128, show_default=True)
@click.option("--epochs", default=1, show_default=True, help="Training epochs per trial.")
@click.option("--max-steps", type=int, help="Training steps per trial (budget).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=0.1, show_default=True)
@click.option(
    "--far",
    "fars",
    multiple=True,
    type=float,
    default=(1e-3, 1e-4, 1e-5),
    show_default=True,
    help="FARs of ACC (weights 0.5/0.25/0.25 for three).",
)
@click.option(
    "--retrain-top",
    default=0,
    show_default=True,
    help="Re-train the k best combinations for --retrain-epochs.",
)
@click.option("--retrain-epochs", default=5, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the search in --output.")
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
    workers,
    input_size,
    embedding_size,
    epochs,
    max_steps,
    batch_size,
    lr,
    fars,
    retrain_top,
    retrain_epochs,
    seed,
    resume,
    ray_address,
):
    """Jointly search cleaning thresholds, margin loss and backbone (RL controller + PPO)."""
    from faceclean.search.loop import run_search

    run_search(
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
        train_kwargs={
            "input_size": input_size,
            "embedding_size": embedding_size,
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "workers": 0,
        },
        fars=tuple(fars),
        retrain_top=retrain_top,
        retrain_epochs=retrain_epochs,
        seed=seed,
        resume=resume,
        console=console,
        ray_address=ray_address,
    )


@main.command()
@click.option(
    "-o",
    "--output",
    default="faceclean-demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for every artefact of the demo.",
)
@click.option("--identities", default=40, show_default=True)
@click.option("--images-per-identity", default=12, show_default=True)
@click.option(
    "-m",
    "--model",
    type=click.Path(path_type=Path),
    help="Use this ONNX extractor instead of training a bootstrap one.",
)
@click.option("--steps", default=3, show_default=True, help="Search steps.")
@click.option("--batch", default=2, show_default=True, help="Trials per search step.")
@click.option("--seed", default=0, show_default=True)
def demo(output, identities, images_per_identity, model, steps, batch, seed):
    """The whole pipeline on synthetic faces with known noise, nothing to download:
    bootstrap extractor, extract, clean (scored against the noise), joint search, re-train."""
    from faceclean.demo import run_demo

    run_demo(output, identities, images_per_identity, seed, console, model, steps, batch)
