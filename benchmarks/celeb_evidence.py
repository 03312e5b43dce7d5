"""Issue 18 item 5: evidence on real faces (../shared/data/celeb_dev, 178 identities),
at the embedding-head fidelity level (faceclean/search/embedding_trial.py).

Setup (in --dir, outside the repository): celeb_dev embedded once with the shared
MobileFaceNet (``--preset imagenet``); its identities split with seed 0 into 118 training,
30 validation (what a search scores on) and 30 test identities (what this reports: never
seen by a search). Per seed s: ``faceclean inject-noise`` on the training store, look-alike
flips and distractors half and half (--noise in all, of the rows; no uniform flips,
outliers or splits), seed s.

(a) cleaning's value: the baseline combination's head (ArcFace s=64 m=0.5, W = D = 1)
    trained on the noisy list, on ``faceclean clean``'s list (defaults 0.3 / 0.62), on
    ``clean --tau-intra auto``'s, and on the true clean list (the noisy store's rows with
    their true labels, the distractors' rows left out); TAR@FAR on the test identities.
(b) Table 1's shape: the baseline combination, and a search of each arm (data, loss,
    backbone, all) of --steps x --batch trials (PPO, --warmup uniform), each trial a head
    on the noisy store scored on the validation identities; each arm's best combination
    (by reward, as `faceclean search` ranks) and the baseline are then trained at 3
    training seeds and scored on the test identities (mean of the 3). The trial sigma:
    the baseline combination at --sigma-repeats training seeds on seed 0's noisy store,
    test ACC, sample sd.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/celeb_evidence.py [--part a,b]
        [--seeds 3] [--steps 4] [--batch 8] [--dir /tmp/celeb-evidence]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_faces import celeb_dev_store  # noqa: E402
from table1 import ARMS  # noqa: E402

from faceclean.cli import main as cli  # noqa: E402
from faceclean.search.embedding_trial import EmbeddingHeadTrial, joined_rows, read_store  # noqa: E402
from faceclean.search.face_search import run_search  # noqa: E402
from faceclean.search.space import BASELINE, TOKENS  # noqa: E402
from faceclean.training.verification import evaluate_embeddings  # noqa: E402

FARS = (1e-3, 1e-4, 1e-5)


def invoke(*args: str) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exit_code != 0:
        raise SystemExit(f"faceclean {args[0]} failed: {result.output[-500:]}")


def split(work: Path) -> dict[str, Path]:
    """train / val / test stores (identities 118 / 30 / 30, seed 0); train labels 0..117."""
    out = {k: work / f"{k}.parquet" for k in ("train", "val", "test")}
    if all(p.exists() for p in out.values()):
        return out
    table = pq.read_table(celeb_dev_store())
    ids = np.unique(table["label"].to_numpy())
    np.random.default_rng(0).shuffle(ids)
    parts = {"val": ids[:30], "test": ids[30:60], "train": ids[60:]}
    meta = table.schema.metadata
    for name, keep in parts.items():
        t = table.filter(pc.is_in(table["label"], pa.array(np.sort(keep))))
        if name == "train":
            _, lab = np.unique(t["label"].to_numpy(), return_inverse=True)
            t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(lab))
        pq.write_table(t.replace_schema_metadata(meta), out[name])
    return out


def noisy_and_cleaned(work: Path, train: Path, seed: int, noise: float) -> dict[str, Path]:
    """The noisy store of ``seed``, its truth and its two cleanings (made once)."""
    noisy = work / f"noisy-s{seed}.parquet"
    if not noisy.exists():
        invoke("inject-noise", train, "-o", noisy, "--flip", 0, "--outlier", 0, "--split", 0,
               "--lookalike", noise / 2, "--distractors", noise / 2, "--seed", seed)  # fmt: skip
    lists = {}
    for name, extra in (("clean default", ()), ("clean auto", ("--tau-intra", "auto"))):
        out = work / f"{name.replace(' ', '-')}-s{seed}"
        if not (out / "clean.parquet").exists():
            invoke("clean", noisy, "-o", out, *extra)
        lists[name] = out / "clean.parquet"
    return {"noisy": noisy, "truth": noisy.with_name(noisy.stem + ".truth.parquet"), **lists}


def true_rows(noisy: Path, truth: Path) -> tuple[np.ndarray, np.ndarray]:
    """The true clean list's rows: true labels, the distractors' rows left out."""
    emb, _ = read_store(noisy)
    t = pq.read_table(truth)
    if t["path"].to_pylist() != pq.read_table(noisy, columns=["path"])["path"].to_pylist():
        raise SystemExit(f"{truth}: rows not in the noisy store's order")
    keep = np.asarray(pc.not_equal(t["noise"], "distractor"))
    _, labels = np.unique(t["true_label"].to_numpy()[keep], return_inverse=True)
    return emb[keep], labels


def part_a(work, stores, seeds, noise, head):
    """{list name: [test ACC per seed]} and TARs, printed as a table."""
    test = EmbeddingHeadTrial(str(stores["train"]), str(stores["test"]), str(work), FARS, **head)
    rows: dict[str, list[dict]] = {}
    for seed in range(seeds):
        lists = noisy_and_cleaned(work, stores["train"], seed, noise)
        x, y = read_store(lists["noisy"])
        data = {"noisy": (x, y)}
        for name in ("clean default", "clean auto"):
            data[name] = joined_rows(lists["noisy"], lists[name])
        data["true clean"] = true_rows(lists["noisy"], lists["truth"])
        for name, (x, y) in data.items():
            out = test.fit_score(x, y, dict(BASELINE), seed, test.steps)
            rows.setdefault(name, []).append(out | {"rows": len(x), "classes": int(y.max()) + 1})
    raw_x, raw_y = read_store(stores["test"])
    raw = evaluate_embeddings(raw_x, raw_y, FARS)
    print(f"\n(a) cleaning's value: baseline head, {seeds} seeds, test identities (30); "
          f"the extractor's own embeddings score ACC {raw['acc']:.4f}")  # fmt: skip
    print("| training list | rows | TAR@1e-3 | TAR@1e-4 | ACC |\n|---|---|---|---|---|")
    for name, outs in rows.items():
        cells = [f"{statistics.mean(o['rows'] for o in outs):.0f}"]
        for key in ("0.001", "0.0001"):
            cells.append(ms([o["tars"][key] for o in outs]))
        cells.append(ms([o["acc"] for o in outs]))
        print(f"| {name} | " + " | ".join(cells) + " |")
    return {k: [o["acc"] for o in v] for k, v in rows.items()}


def ms(values) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def part_b(work, stores, args, head):
    t0 = time.perf_counter()

    def test(noisy):
        return EmbeddingHeadTrial(str(noisy), str(stores["test"]), str(work / "test"), FARS, **head)

    lists0 = noisy_and_cleaned(work, stores["train"], 0, args.noise)
    repeats = [
        test(lists0["noisy"])(dict(BASELINE), 1000 + k)["acc"] for k in range(args.sigma_repeats)
    ]
    sigma = statistics.stdev(repeats)
    acc: dict[str, list[float]] = {"baseline": []}
    best: dict[str, list[dict]] = {}
    for seed in range(args.seeds):
        noisy = noisy_and_cleaned(work, stores["train"], seed, args.noise)["noisy"]
        t = test(noisy)
        acc["baseline"].append(
            float(np.mean([t(dict(BASELINE), 100 * seed + k)["acc"] for k in range(3)]))
        )
        for arm in ARMS:
            out = work / f"search-{arm}-s{seed}"
            summary = run_search(
                noisy, None, out, steps=args.steps, batch=args.batch, aspects=arm, seed=seed,
                head={"val_store": str(stores["val"]), **head}, resume=(out / "state.pt").exists(),
                controller={"warmup_trials": args.warmup},
            )  # fmt: skip
            top = summary["top"][0]
            combo = {k: top[k] for k in TOKENS}
            accs = [t(combo, 100 * seed + k)["acc"] for k in range(3)]
            acc.setdefault(arm, []).append(float(np.mean(accs)))
            best.setdefault(arm, []).append(
                combo | {"val_acc": top["acc"], "reward": top["reward"]}
            )
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s): "
              + ", ".join(f"{k} {v[-1]:.4f}" for k, v in acc.items()), flush=True)  # fmt: skip
    print(f"\n(b) Table 1 shape: {args.steps} x {args.batch} head trials per arm (PPO, "
          f"{args.warmup} uniform), best by reward on the validation identities, test ACC "
          f"(mean of 3 training seeds) over {args.seeds} noise/search seeds")  # fmt: skip
    print(
        f"trial sigma (baseline, {args.sigma_repeats} training seeds, seed 0's store, one "
        f"trial's test ACC): {sigma:.4f}; values {[round(r, 4) for r in repeats]}"
    )
    print("| arm | test ACC mean ± sd | minus baseline, paired, mean ± sd | beyond 2σ? |")
    print("|---|---|---|---|")
    for arm, values in acc.items():
        diff = [v - b for v, b in zip(values, acc["baseline"], strict=True)]
        beyond = (
            "-"
            if arm == "baseline"
            else ("yes" if abs(statistics.mean(diff)) > 2 * sigma else "no")
        )
        print(f"| {arm} | {ms(values)} | {ms(diff)} | {beyond} |")
    for arm, combos in best.items():
        shown = [
            ", ".join(f"{k}={c[k]:g}" for k in TOKENS) + f" (val ACC {c['val_acc']:.4f})"
            for c in combos
        ]
        print(f"  best of {arm}: " + "; ".join(shown))
    return {"sigma": sigma, "repeats": repeats, "acc": acc, "best": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/celeb-evidence"))
    ap.add_argument("--part", default="a,b")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--noise",
        type=float,
        default=0.17,
        help="share of rows (half look-alike flips, half distractors)",
    )
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--head-steps", type=int, default=300)
    ap.add_argument("--sigma-repeats", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.dir.mkdir(parents=True, exist_ok=True)
    stores = split(args.dir)
    head = {"steps": args.head_steps}
    result = {}
    t0 = time.perf_counter()
    if "a" in args.part:
        result["a"] = part_a(args.dir, stores, args.seeds, args.noise, head)
        print(f"(a) took {time.perf_counter() - t0:.0f} s", flush=True)
    if "b" in args.part:
        result["b"] = part_b(args.dir, stores, args, head)
        print(f"(b) took {time.perf_counter() - t0:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
