"""`faceclean train`, `eval`, `export`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click

from faceclean.cli.common import FacecleanError, Finite, _summary_table, main
from faceclean.cli.evalmodel import onnx_model_options
from faceclean.outputs import resumable_dir

_positive = Finite(min=0.0, min_open=True)


def _list_grid(ctx: click.Context, _param, value: bool) -> None:
    """Print the MACs of every (W, D) point of the default search grid and exit."""
    if not value or ctx.resilient_parsing:
        return
    from faceclean.search.space import DEFAULT_CHOICES
    from faceclean.training.backbones import grid_macs

    widths, depths = DEFAULT_CHOICES["width"], DEFAULT_CHOICES["depth"]
    click.echo("MobileFaceNet MACs (millions; 112x112 input, 512-d embedding) per (W, D):")
    click.echo("D \\ W       " + "".join(f"{w:>8.3g}" for w in widths))
    table = grid_macs(widths, depths)
    for d in depths:
        blocks = "+".join(str(n) for n in table[(widths[0], d)][0])
        row = "".join(f"{table[(w, d)][1] / 1e6:8.1f}" for w in widths)
        click.echo(f"{d:<5.3g}{blocks:>8}{row}")
    ctx.exit()


@main.command("train")
@click.argument("clean_list", type=click.Path(path_type=Path))
@click.option(
    "--list-grid",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_list_grid,
    help="Print the MACs of every (W, D) of the default search grid (with the blocks per "
    "stage of each D) and exit.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image root the list's paths are relative to [default: the list's folder].",
)
@click.option(
    "--backbone",
    default="mobilefacenet",
    show_default=True,
    help="mobilefacenet, iresnet18/34/50/100.",
)
@click.option("--width", type=_positive, default=1.0, show_default=True, help="Width multiplier W.")
@click.option("--depth", type=_positive, default=1.0, show_default=True, help="Depth multiplier D.")
@click.option("--embedding-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--input-size",
    type=click.IntRange(32, 1024),
    default=112,
    show_default=True,
    help="Square input side in pixels, 32 to 1024 (56 trains 4x faster than 112).",
)
@click.option(
    "--loss",
    default="unified",
    show_default=True,
    help="unified, arcface, cosface, sphereface, softmax, adaface, npcface, "
    "mv-softmax, search-softmax, linear.",
)
@click.option("--m1", type=Finite(), help="unified: angular multiplier [1.15].")
@click.option("--m2", type=Finite(), help="unified: additive angular margin [0.22].")
@click.option("--m3", type=Finite(), help="unified: additive cosine margin [0].")
@click.option("--s-p", type=_positive, help="unified: positive scale [40].")
@click.option("--s-n", type=_positive, help="unified: negative scale [48].")
@click.option(
    "--loss-arg",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other head parameter, e.g. --loss-arg s=32 --loss-arg m=0.4.",
)
@click.option(
    "--sample-rate",
    type=Finite(0.0, 1.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Partial FC: share of all classes (positives included) whose centres each step "
    "uses; every positive is always kept.",
)
@click.option(
    "--teacher",
    type=click.Path(path_type=Path),
    help="LATSE: a trained run over the same labels; a sample trains the student only when "
    "its label is in the teacher's top-k.",
)
@click.option("--teacher-topk", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps.")
# BatchNorm needs two samples per batch to train
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--lr", type=_positive, default=0.1, show_default=True)
@click.option("--warmup-epochs", type=Finite(min=0.0), default=0.0, show_default=True)
@click.option(
    "--schedule", type=click.Choice(["cosine", "step"]), default="cosine", show_default=True
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Data-loading processes.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--val",
    type=click.Path(path_type=Path),
    help="Validation identities (folder/list) to score TAR@FAR after training.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder (config, checkpoint, metrics); an existing one resumes.",
)
@click.option(
    "--max-failures",
    type=Finite(0.0, 1.0),
    default=0.01,
    show_default=True,
    help="Share of the list's images that may be unreadable (skipped, listed in "
    "skipped_images.tsv) before training stops with an error.",
)
@click.option(
    "--search-copies",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --loss search-softmax: the reward-guided search of its paper. Each epoch "
    "this many copies train with a ~ N(mu, sigma), are scored on --val, mu follows the "
    "policy gradient and the best copy goes on (0: a fixed or random a).",
)
@click.option(
    "--search-sigma", type=_positive, default=0.5, show_default=True, help="Search: sigma."
)
@click.option(
    "--search-lr", type=_positive, default=1.0, show_default=True, help="Search: step on mu."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh in place of an existing run folder (built aside, swapped in when "
    "training ends; until then the old run stays).",
)
def train_cmd(
    clean_list,
    data,
    backbone,
    width,
    depth,
    embedding_size,
    input_size,
    loss,
    m1,
    m2,
    m3,
    s_p,
    s_n,
    loss_arg,
    sample_rate,
    teacher,
    teacher_topk,
    epochs,
    max_steps,
    batch_size,
    lr,
    warmup_epochs,
    schedule,
    seed,
    workers,
    device,
    val,
    output,
    max_failures,
    overwrite,
    search_copies,
    search_sigma,
    search_lr,
):
    """Train a backbone with a margin loss on a clean list (Parquet, 'path label' or .rec).

    The same command on the same run folder resumes it; --overwrite starts afresh."""
    from faceclean.training.run import TrainConfig
    from faceclean.training.search_softmax import search_softmax_train
    from faceclean.training.train import evaluate_run, train

    if search_copies and not val:
        raise click.UsageError("--search-copies needs --val: the copies are scored on it")
    kwargs = {
        k: v
        for k, v in {"m1": m1, "m2": m2, "m3": m3, "s_p": s_p, "s_n": s_n}.items()
        if v is not None
    }
    for item in loss_arg:
        key, _, value = item.partition("=")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        # json reads NaN and Infinity: a loss parameter must be a finite number or a flag
        if not isinstance(parsed, bool | int | float) or not math.isfinite(parsed):
            raise click.BadParameter(
                f"{item!r}: expected KEY=NUMBER (finite)", param_hint="'--loss-arg'"
            )
        kwargs[key.replace("-", "_")] = parsed
    cfg = TrainConfig(
        clean_list=str(clean_list),
        data_root=str(data) if data else None,
        backbone=backbone,
        width=width,
        depth=depth,
        embedding_size=embedding_size,
        input_size=input_size,
        loss=loss,
        loss_kwargs=kwargs,
        sample_rate=sample_rate,
        teacher=str(teacher) if teacher else None,
        teacher_topk=teacher_topk,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        warmup_epochs=warmup_epochs,
        schedule=schedule,
        seed=seed,
        workers=workers,
        device=device,
    )
    inputs = [clean_list, data, teacher, val]
    # Under torchrun every rank runs this command; rank 0 writes the run folder and holds
    # its lock, and a fresh start (built aside, swapped in) cannot be shared by the ranks.
    if overwrite and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise FacecleanError("--overwrite cannot be used under torchrun: remove the folder first")
    writer = int(os.environ.get("RANK", 0)) == 0
    with resumable_dir(output, overwrite=overwrite, inputs=inputs, lock=writer) as run_dir:
        try:
            if search_copies:
                summary = search_softmax_train(
                    cfg, run_dir, val, search_copies, search_sigma, search_lr
                )
            else:
                summary = train(cfg, run_dir, progress=True, max_failures=max_failures)
        except TypeError as e:
            raise FacecleanError(f"bad parameter for loss {loss!r}: {e}") from None
    summary["run_dir"] = str(output)
    if val:
        summary.update(evaluate_run(output, val, (1e-2, 1e-3, 1e-4)))
    _summary_table(
        "faceclean train",
        summary,
        float_format="{:.4f}",
    )


@main.command("eval")
@click.argument("run_dir", metavar="RUN_DIR|MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--val",
    type=click.Path(path_type=Path),
    help="Validation identities: all genuine and impostor pairs are scored.",
)
@click.option(
    "--bin",
    "bins",
    multiple=True,
    type=click.Path(path_type=Path),
    help="InsightFace .bin pair set(s): 10-fold accuracy with flip.",
)
@click.option(
    "--far",
    "fars",
    multiple=True,
    type=Finite(0.0, 1.0, min_open=True),
    default=(1e-3, 1e-4, 1e-5),
    show_default=True,
)
@click.option("--unfinished", is_flag=True, help="Accept a run whose training has not ended.")
@onnx_model_options
def eval_cmd(run_dir, val, bins, fars, unfinished, **onnx_opts):
    """TAR@FAR, the paper's ACC, and .bin accuracies of a trained run, or of any ONNX
    face model (MODEL.onnx, run with extract's preprocessing rules and options)."""
    from faceclean.training.evaluate_model import bin_accuracy_text, evaluate_onnx

    if not (val or bins):
        raise click.UsageError("give --val and/or --bin")
    if run_dir.suffix == ".onnx" and run_dir.is_file():
        rows = evaluate_onnx(run_dir, val, bins, fars, **onnx_opts)
        _summary_table("faceclean eval", rows, float_format="{:.4f}")
        return
    asked = [k for k, v in onnx_opts.items() if v is not None and k != "model_device"]
    if asked or onnx_opts.get("model_device") not in (None, "auto"):
        raise click.UsageError("preprocessing/model options apply to an ONNX model, not a run")
    from faceclean.training.run import load_run
    from faceclean.training.train import evaluate_run, evaluate_run_bin

    load_run(run_dir, require_finished=not unfinished)  # a clear error before any work

    rows = {}
    if val:
        rows.update(evaluate_run(run_dir, val, tuple(fars)))
    for b in bins:
        rows[f"{b.name} accuracy"] = bin_accuracy_text(b, evaluate_run_bin(run_dir, b))
    _summary_table("faceclean eval", rows, float_format="{:.4f}")


@main.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option("--unfinished", is_flag=True, help="Export a run whose training has not ended.")
def export_cmd(run_dir, output, overwrite, unfinished):
    """Export a trained run to ONNX (dynamic batch, preprocessing recorded)."""
    from faceclean.training.export import export_onnx

    model = export_onnx(run_dir, output, overwrite=overwrite, unfinished=unfinished)
    _summary_table("faceclean export", {"model": str(model)})
