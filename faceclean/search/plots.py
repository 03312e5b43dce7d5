"""The plots a user looks at after a search (PNG, written beside trials.jsonl).

The three plots are a set: each is rendered under a temporary name and all are renamed
together at the end, so a killed re-run never leaves a new plot beside an old one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceclean.outputs import commit_files, tmp_sibling
from faceclean.search.space import TOKENS, choice_label


def _render(fig, path: Path) -> tuple[Path, Path]:
    """(temporary, final): the figure rendered under the temporary name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = tmp_sibling(path)
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return tmp, path


def plot_search(
    trials: list[dict],
    out_dir: str | Path,
    entropy: list[float] | None = None,
    top: int = 20,
    noise: dict | None = None,
) -> list[Path]:
    """accuracy.png (ACC per trial and its moving average: the paper's Fig. 3; beside it
    the policy entropy per step in nats, ``entropy`` or the trials' ``policy_entropy``),
    tokens.png (mean reward per choice of each token), difficulty.png (data vs loss
    difficulty of the best trials: Fig. 4). With ``noise`` (the signal check's verdict:
    "sigma", "chance", "mean_acc") the noise is drawn as bands: the baseline's ACC +- 2
    sigma and chance on accuracy.png, the moving average +- sigma / sqrt(window), and
    +- sigma / sqrt(trials) error bars on tokens.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    ok = [t for t in trials if t["error"] is None]
    paths, rendered = [], []
    if not ok:
        return paths
    try:
        acc = np.array([t["acc"] for t in ok])
        fig, (ax, ax_h) = plt.subplots(1, 2, figsize=(11, 3.5), width_ratios=(3, 2))
        ax.scatter([t["trial"] for t in ok], acc, s=8, alpha=0.5, label="sampled trials")
        window = max(1, min(len(acc) // 2, max(2, len(acc) // 10)))
        moving = np.convolve(acc, np.ones(window) / window, mode="valid")
        x_moving = [t["trial"] for t in ok][window - 1 :]
        ax.plot(x_moving, moving, color="#cc3311", label=f"moving average ({window})")
        sigma = (noise or {}).get("sigma")
        if sigma is not None and np.isfinite(sigma):
            half = sigma / np.sqrt(window)
            ax.fill_between(x_moving, moving - half, moving + half, color="#cc3311", alpha=0.2)
            base = noise["mean_acc"].get("baseline")
            if base is not None:
                ax.axhspan(base - 2 * sigma, base + 2 * sigma, color="#999999", alpha=0.25,
                           label=f"baseline ± 2σ (σ = {sigma:.4f})")  # fmt: skip
            ax.axhline(noise["chance"], color="#000000", ls=":", lw=1, label="chance")
        ax.set_xlabel("trial")
        ax.set_ylabel("ACC")
        ax.legend()
        if entropy is None:
            per_step = {t["step"]: t.get("policy_entropy") for t in trials}
            entropy = [per_step[k] for k in sorted(per_step)]
        steps = [i for i, h in enumerate(entropy) if h is not None]
        if steps:
            ax_h.plot(steps, [entropy[i] for i in steps], color="#228833")
        else:
            ax_h.text(0.5, 0.5, "no policy (random, TPE, Gaussian)", ha="center", va="center")
        ax_h.set_xlabel("step")
        ax_h.set_ylabel("policy entropy (nats)")
        paths.append(out_dir / "accuracy.png")
        rendered.append(_render(fig, paths[-1]))

        fig, axes = plt.subplots(3, 3, figsize=(10, 8))
        for ax, token in zip(axes.ravel(), TOKENS, strict=True):
            # Numbers in order, then "auto" (a tau_intra the trial's data chose).
            values = sorted(
                {t[token] for t in ok}, key=lambda v: (v == "auto", 0 if v == "auto" else v)
            )
            groups = [[t["reward"] for t in ok if t[token] == v] for v in values]
            bars = None
            if sigma is not None and np.isfinite(sigma):
                bars = [sigma / np.sqrt(len(g)) for g in groups]
            ax.bar([choice_label(v) for v in values], [np.mean(g) for g in groups], yerr=bars,
                   color="#4477aa", capsize=2)  # fmt: skip
            ax.set_title(token)
            ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        paths.append(out_dir / "tokens.png")
        rendered.append(_render(fig, paths[-1]))

        # A failed auto trial chose no tau_intra: no data difficulty to place it at.
        placed = [t for t in ok if t["data_difficulty"] is not None]
        best = sorted(placed, key=lambda t: -t["reward"])[:top]
        fig, ax = plt.subplots(figsize=(5, 4))
        sc = ax.scatter(
            [t["data_difficulty"] for t in best],
            [t["loss_difficulty"] for t in best],
            c=[t["reward"] for t in best],
            cmap="viridis",
        )
        fig.colorbar(sc, label="reward")
        ax.set_xlabel("data difficulty 1 - tau_intra + tau_inter")
        ax.set_ylabel("loss difficulty s_n (m1 - 1 + m2 + m3) / s_p")
        ax.set_title(f"top {len(best)} trials")
        paths.append(out_dir / "difficulty.png")
        rendered.append(_render(fig, paths[-1]))
    except BaseException:
        for tmp, _ in rendered:
            tmp.unlink(missing_ok=True)
        raise
    commit_files(rendered)
    return paths
