"""`faceclean train`, `eval`, `export`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from faceclean.cli.common import FacecleanError, _summary_table, main


@main.command("train")
@click.argument("clean_list", type=click.Path(path_type=Path))
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
@click.option("--width", default=1.0, show_default=True, help="Width multiplier W.")
@click.option("--depth", default=1.0, show_default=True, help="Depth multiplier D.")
@click.option("--embedding-size", default=128, show_default=True)
@click.option("--input-size", default=112, show_default=True, help="Square input side (56 ok).")
@click.option(
    "--loss",
    default="unified",
    show_default=True,
    help="unified, arcface, cosface, sphereface, softmax, adaface, npcface, "
    "mv-softmax, search-softmax, linear.",
)
@click.option("--m1", type=float, help="unified: angular multiplier [1.15].")
@click.option("--m2", type=float, help="unified: additive angular margin [0.22].")
@click.option("--m3", type=float, help="unified: additive cosine margin [0].")
@click.option("--s-p", type=float, help="unified: positive scale [40].")
@click.option("--s-n", type=float, help="unified: negative scale [48].")
@click.option(
    "--loss-arg",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other head parameter, e.g. --loss-arg s=32 --loss-arg m=0.4.",
)
@click.option(
    "--sample-rate",
    default=1.0,
    show_default=True,
    help="Partial-FC share of negative classes per step.",
)
@click.option(
    "--teacher",
    type=click.Path(path_type=Path),
    help="LATSE: a trained run over the same labels; a sample trains the student only when "
    "its label is in the teacher's top-k.",
)
@click.option("--teacher-topk", default=5, show_default=True)
@click.option("--epochs", default=1, show_default=True)
@click.option("--max-steps", type=int, help="Stop after this many steps.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=0.1, show_default=True)
@click.option("--warmup-epochs", default=0.0, show_default=True)
@click.option(
    "--schedule", type=click.Choice(["cosine", "step"]), default="cosine", show_default=True
)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Data-loading processes.")
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
):
    """Train a backbone with a margin loss on a clean list (Parquet, 'path label' or .rec)."""
    from faceclean.training.run import TrainConfig
    from faceclean.training.train import evaluate_run, train

    kwargs = {
        k: v
        for k, v in {"m1": m1, "m2": m2, "m3": m3, "s_p": s_p, "s_n": s_n}.items()
        if v is not None
    }
    for item in loss_arg:
        key, _, value = item.partition("=")
        try:
            kwargs[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected KEY=NUMBER") from None
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
    try:
        summary = train(cfg, output, progress=True)
    except TypeError as e:
        raise FacecleanError(f"bad parameter for loss {loss!r}: {e}") from None
    if val:
        summary.update(evaluate_run(output, val, (1e-2, 1e-3, 1e-4)))
    _summary_table(
        "faceclean train",
        {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in summary.items()},
    )


@main.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
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
    "--far", "fars", multiple=True, type=float, default=(1e-3, 1e-4, 1e-5), show_default=True
)
def eval_cmd(run_dir, val, bins, fars):
    """TAR@FAR, the paper's ACC, and .bin accuracies of a trained run."""
    from faceclean.training.train import evaluate_run, evaluate_run_bin

    rows = {}
    if val:
        rows.update(evaluate_run(run_dir, val, tuple(fars)))
    for b in bins:
        r = evaluate_run_bin(run_dir, b)
        rows[f"{b.name} accuracy"] = f"{r['accuracy']:.4f} ± {r['std']:.4f}"
    if not rows:
        raise click.UsageError("give --val and/or --bin")
    _summary_table(
        "faceclean eval", {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in rows.items()}
    )


@main.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
def export_cmd(run_dir, output):
    """Export a trained run to ONNX (dynamic batch, preprocessing recorded)."""
    from faceclean.training.export import export_onnx

    _summary_table("faceclean export", {"model": str(export_onnx(run_dir, output))})
