"""The `faceclean` command line: a thin layer over the Python API, one verb per stage."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from faceclean import __version__
from faceclean.errors import FacecleanError
from faceclean.preprocess import FITS, PRESETS

console = Console(stderr=True)


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


class _Group(click.Group):
    """Turns FacecleanError into one red line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FacecleanError as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceclean")
def main() -> None:
    """faceclean: clean face-recognition training sets.

    \b
    Stages, one verb each:
      extract            images -> L2-normalised embeddings (Parquet), ONNX face model
      filter             score every sample's discriminability, drop D < tau_intra
      merge              unite classes whose centroids have cosine > tau_inter
      clean              filter + merge + the clean list training reads
      inject-noise       corrupt a clean embedding store with known label noise
      report             D histogram, drops per class, merged groups, contact sheet
      evaluate-cleaning  precision/recall of a clean against the injected truth
      train              train a backbone (W, D) with a margin loss on a clean list
      eval               TAR@FAR / ACC on validation identities, .bin accuracy
      export             a trained run -> ONNX that extract reads without flags
      search             the joint RL search over cleaning, loss and backbone
      demo               make a small synthetic face set and run the pipeline on it
    """


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "-m",
    "--model",
    required=True,
    type=click.Path(path_type=Path),
    help="ONNX face model: one input [N,3,H,W], one output [N,dim].",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Embedding store to write (Parquet).",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    help="Folder the paths of a list file are relative to [default: its folder].",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="Preprocessing preset: insightface (RGB, (x-127.5)/127.5), facexzoo "
    "(BGR, (x-127.5)/128), imagenet (RGB, ImageNet mean/std).",
)
@click.option("--mean", callback=_triple, help="Per-channel mean in 0-255 pixel units, 'a,b,c'.")
@click.option("--std", callback=_triple, help="Per-channel std in 0-255 pixel units, 'a,b,c'.")
@click.option(
    "--rgb/--bgr",
    "rgb",
    default=None,
    help="Channel order the model takes [default: preset's, else RGB].",
)
@click.option(
    "--fit",
    type=click.Choice(FITS),
    help="Images not at the model's size: resize, or pad/centre-crop [default: resize].",
)
@click.option("--flip", is_flag=True, help="Flip test-time augmentation (image + mirror).")
@click.option("--batch-size", default=64, show_default=True, help="Images per model call.")
@click.option(
    "--workers",
    default=min(4, os.cpu_count() or 1),
    show_default=True,
    help="Image-decoding threads.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto uses CUDA when onnxruntime has it.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Storage type of the embeddings.",
)
@click.option(
    "--chunk-size",
    default=8192,
    show_default=True,
    help="Images per resumable chunk and Parquet row group.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def extract(
    data,
    model,
    output,
    root,
    preset,
    mean,
    std,
    rgb,
    fit,
    flip,
    batch_size,
    workers,
    device,
    dtype,
    chunk_size,
    overwrite,
    quiet,
):
    """Embed the face images in DATA with an ONNX model, into a Parquet store.

    DATA is an image folder (root/<identity>/<image>), a list file of 'path label' lines,
    or an InsightFace train.rec (with train.idx beside it). Images that cannot be decoded
    are skipped and listed in <output>.failures.tsv. A killed run resumes when the same
    command is run again.
    """
    from faceclean.extract import extract as run_extract

    result = run_extract(
        data,
        model,
        output,
        root=root,
        preset=preset,
        mean=mean,
        std=std,
        channels=None if rgb is None else ("RGB" if rgb else "BGR"),
        fit=fit,
        flip=flip,
        batch_size=batch_size,
        workers=workers,
        device=device,
        dtype=dtype,
        chunk_size=chunk_size,
        overwrite=overwrite,
        progress=not quiet,
    )
    if quiet:
        return
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    spec = result.preprocessing
    table = Table(title="faceclean extract", show_header=False)
    rows = [
        ("output", str(result.output)),
        ("images", f"{result.num_images:,} ({result.num_resumed:,} from an earlier run)"),
        ("written", f"{result.num_written:,}"),
        (
            "failed",
            f"{result.num_failed:,}"
            + (f"  -> {result.failures_path}" if result.failures_path else ""),
        ),
        ("resized/padded", f"{result.num_resized:,} to {spec.width}x{spec.height} ({spec.fit})"),
        (
            "preprocessing",
            f"{spec.channels}, mean {spec.mean}, std {spec.std}" + (", flip TTA" if flip else ""),
        ),
        ("batching", result.batch_mode),
        ("providers", ", ".join(result.providers)),
        ("time", f"{result.seconds:.1f} s, {result.images_per_second:,.1f} images/s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


_device = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="FAISS device; auto uses every GPU it sees.",
)
_batch_rows = click.option(
    "--batch-rows",
    default=65536,
    show_default=True,
    help="Rows per streamed batch (bounds memory).",
)
_loo = click.option(
    "--loo-below",
    default=10,
    show_default=True,
    help="Classes with fewer samples use leave-one-out own centroids.",
)


def _summary_table(title: str, rows: dict) -> None:
    table = Table(title=title, show_header=False)
    for k, v in rows.items():
        plain_int = isinstance(v, int) and not isinstance(v, bool)
        table.add_row(str(k), f"{v:,}" if plain_int else str(v))
    console.print(table)


def _write_tables(*pairs) -> None:
    import pyarrow.parquet as pq

    from faceclean.store import atomic_path

    for table, path in pairs:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name.removesuffix(".parquet") + suffix)


@main.command("filter")
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option(
    "--tau-intra",
    default=0.3,
    show_default=True,
    help="Drop samples whose discriminability D is below this (paper: 0.3).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Per-sample scores table (Parquet).",
)
@_loo
@_device
@_batch_rows
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def filter_cmd(embeddings, tau_intra, output, loo_below, device, batch_rows, overwrite):
    """Score each sample: D = cos(own centroid) / cos(hardest negative centroid).

    Writes path, label, identity, cos_pos, hardest_negative, cos_neg, discriminability and
    keep (D >= tau_intra; singletons are kept with D = NaN).
    """
    from faceclean.filter import filter_store

    r = filter_store(
        embeddings,
        tau_intra,
        output,
        loo_below=loo_below,
        batch_rows=batch_rows,
        device=device,
        overwrite=overwrite,
    )
    _summary_table(
        "faceclean filter",
        {
            "output": str(output),
            "samples": r.num_samples,
            "kept": r.num_kept,
            "dropped": r.num_samples - r.num_kept,
            "classes": r.num_classes,
            "classes emptied": r.num_emptied,
            "singleton classes": r.num_singletons,
            "FAISS": r.device,
        },
    )


@main.command("merge")
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option(
    "--tau-inter",
    default=0.62,
    show_default=True,
    help="Merge classes whose centroid cosine exceeds this (paper: 0.62).",
)
@click.option(
    "--tau-intra",
    type=float,
    default=None,
    help="Filter first and merge the centroids of the kept samples only.",
)
@click.option(
    "--max-group-size",
    default=0,
    show_default=True,
    help="Chain guard: split bigger groups by cutting their weakest links (0: off).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Merge table (Parquet); the pairs go to <output>.pairs.parquet.",
)
@_loo
@_device
@_batch_rows
def merge_cmd(
    embeddings, tau_inter, tau_intra, max_group_size, output, loo_below, device, batch_rows
):
    """Group classes that are one identity (union-find over centroid links)."""
    from faceclean.filter import class_sums, filter_store
    from faceclean.merge import merge_classes

    if tau_intra is None:
        sums, counts = class_sums(embeddings, batch_rows)
    else:
        fr = filter_store(
            embeddings, tau_intra, None, loo_below=loo_below, batch_rows=batch_rows, device=device
        )
        sums, counts = fr.kept_sums, fr.kept_counts
    mr = merge_classes(sums, counts, tau_inter, max_group_size, device)
    pairs_path = _sibling(output, ".pairs.parquet")
    _write_tables((mr.table, output), (mr.pairs, pairs_path))
    _summary_table(
        "faceclean merge",
        {
            "output": str(output),
            "pairs": str(pairs_path),
            "links": mr.pairs.num_rows,
            "merged groups": len(mr.groups),
            "groups split by guard": mr.num_split_groups,
            "largest group": len(mr.groups[0]) if mr.groups else 1,
        },
    )


@main.command("clean")
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option("--tau-intra", default=0.3, show_default=True, help="Filter threshold on D.")
@click.option("--tau-inter", default=0.62, show_default=True, help="Merge threshold.")
@click.option("--max-group-size", default=0, show_default=True, help="Chain guard (0: off).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "lst", "rec"]),
    default="parquet",
    show_default=True,
    help="Format of the clean list.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image root for --format rec [default: the one the embeddings record].",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder: scores, merges, pairs, clean list, summary.json.",
)
@_loo
@_device
@_batch_rows
def clean_cmd(
    embeddings,
    tau_intra,
    tau_inter,
    max_group_size,
    fmt,
    data,
    output,
    loo_below,
    device,
    batch_rows,
):
    """Filter, merge and write the clean list that `faceclean train` reads."""
    from faceclean.clean import clean

    r = clean(
        embeddings,
        output,
        tau_intra,
        tau_inter,
        fmt=fmt,
        max_group_size=max_group_size,
        loo_below=loo_below,
        data_root=data,
        device=device,
        batch_rows=batch_rows,
    )
    s = {k: v for k, v in r.summary.items() if k != "largest_groups"}
    s["clean list"] = str(r.outputs["clean"])
    _summary_table("faceclean clean", s)


@main.command("report")
@click.argument("clean_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image root for the contact sheet [default: the one the embeddings record].",
)
def report_cmd(clean_dir, data):
    """Write report.html: D histogram, drops per class, merged groups, contact sheet."""
    from faceclean.report import write_report

    out = write_report(clean_dir, data)
    _summary_table("faceclean report", {k: str(v) for k, v in out.items()})


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
    from faceclean.train import TrainConfig, evaluate_run, train

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
        str(clean_list),
        str(data) if data else None,
        backbone,
        width,
        depth,
        embedding_size,
        input_size,
        loss,
        kwargs,
        sample_rate,
        epochs,
        max_steps,
        batch_size,
        lr,
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
    from faceclean.train import evaluate_run, evaluate_run_bin

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
    from faceclean.export import export_onnx

    _summary_table("faceclean export", {"model": str(export_onnx(run_dir, output))})


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
    from faceclean.search import run_search

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


@main.command("inject-noise")
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Noisy store; the truth goes to <output>.truth.parquet.",
)
@click.option("--flip", default=0.05, show_default=True, help="Fraction of samples relabelled.")
@click.option(
    "--outlier",
    default=0.05,
    show_default=True,
    help="Fraction of identities held out and filed under others.",
)
@click.option(
    "--split", default=0.05, show_default=True, help="Fraction of identities split over two labels."
)
@click.option("--seed", default=0, show_default=True)
def inject_noise_cmd(embeddings, output, flip, outlier, split, seed):
    """Corrupt a clean embedding store with known noise (in memory)."""
    from faceclean.noise import inject_noise
    from faceclean.store import open_store

    ns = inject_noise(open_store(embeddings).read(), flip, outlier, split, seed)
    truth = _sibling(output, ".truth.parquet")
    _write_tables((ns.table, output), (ns.truth, truth))
    counts = ns.truth["noise"].value_counts().to_pylist()
    _summary_table(
        "faceclean inject-noise",
        {"output": str(output), "truth": str(truth), **{c["values"]: c["counts"] for c in counts}},
    )


@main.command("evaluate-cleaning")
@click.argument("clean_dir", type=click.Path(path_type=Path))
@click.option(
    "--truth",
    required=True,
    type=click.Path(path_type=Path),
    help="Truth table written by inject-noise.",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Also sweep tau_intra and tau_inter; writes sweep.csv and sweep.png.",
)
def evaluate_cleaning_cmd(clean_dir, truth, sweep):
    """Precision/recall of a `faceclean clean` output against injected noise."""
    from faceclean.evaluate import evaluate_clean_dir

    result = evaluate_clean_dir(clean_dir, truth, do_sweep=sweep)
    _summary_table(
        "faceclean evaluate-cleaning",
        {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in result.items()},
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


if __name__ == "__main__":
    main()
