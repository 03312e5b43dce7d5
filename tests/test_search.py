import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from faceclean.errors import FacecleanError
from faceclean.search.controller import PPO, Controller
from faceclean.search.face_search import read_log, search
from faceclean.search.space import BASELINE, TOKENS, load_space
from faceclean.search.surrogate import SurrogateObjective


def test_controller_learns_to_prefer_rewarded_tokens():
    torch.manual_seed(0)
    target = torch.tensor([2, 5, 0])
    # without elite replay the policy concentrates on the target; with it (the default) the
    # 16 distinct elite sequences, most of them near misses, keep some mass off the target
    for options, share in (({"elite": 0}, 0.9), ({}, 0.75)):
        torch.manual_seed(0)
        controller = Controller([4, 6, 3])
        ppo = PPO(controller, lr=5e-3, **options)
        gen = torch.Generator().manual_seed(1)
        for _ in range(40):
            tokens, logp = controller.sample(16, gen)
            ppo.update(tokens, logp, (tokens == target).float().mean(1))
        tokens, _ = controller.sample(500, gen)
        assert ((tokens == target).float().mean(0) > share).all(), options


def test_advantages_are_centred_on_the_batch():
    from faceclean.search.controller import advantages

    r = torch.tensor([0.9, 0.91, 0.95, 0.97, 0.99, 0.99])  # all high: half must still go down
    for kind in ("mean", "rank"):
        a = advantages(r, kind)
        assert abs(float(a.mean())) < 1e-6 and (a < 0).sum() == 3
    assert float(advantages(r, "rank")[4]) == float(advantages(r, "rank")[5])  # ties share
    assert advantages(torch.ones(4)).abs().sum() == 0


def test_ppo_on_pure_noise_keeps_exploring():
    # Rewards unrelated to the tokens: batch-normalised advantages make noise look like
    # signal, so the policy drifts (measured: tokens at ~20-75% of their uniform entropy
    # after 100 updates), but the entropy floor (10% of uniform) keeps every token open.
    torch.manual_seed(0)
    controller = Controller([13, 7, 8])
    ppo = PPO(controller)
    gen = torch.Generator().manual_seed(1)
    noise = torch.Generator().manual_seed(2)
    for _ in range(100):
        tokens, logp = controller.sample(8, gen)
        ppo.update(tokens, logp, torch.rand(8, generator=noise))
    _, ent = controller.evaluate(controller.sample(256, gen)[0])
    per_token = ent.mean(0) / torch.tensor([13.0, 7.0, 8.0]).log()
    assert (per_token > 0.1).all(), per_token


def test_elite_set_keeps_the_best_distinct_sequences_and_is_saved():
    torch.manual_seed(0)
    ppo = PPO(Controller([3, 3]), elite=2)
    tokens = torch.tensor([[0, 1], [2, 2], [0, 1], [1, 0]])
    ppo.update(tokens, torch.full((4, 2), -1.0986), torch.tensor([0.5, 0.1, 0.9, 0.7]))
    assert ppo.elite_tokens.tolist() == [[0, 1], [1, 0]]  # the repeat keeps its best, 0.9
    assert ppo.elite_rewards.tolist() == pytest.approx([0.9, 0.7])
    other = PPO(Controller([3, 3]), elite=2)
    other.load_state_dict(ppo.state_dict())
    assert other.elite_tokens.tolist() == [[0, 1], [1, 0]] and other.updates == 1
    # the elite term raises the likelihood of the elite even when a batch has equal rewards
    before = other.controller.evaluate(other.elite_tokens)[0].sum()
    other.update(torch.tensor([[2, 2], [2, 0]]), torch.full((2, 2), -1.0986), torch.zeros(2))
    assert float(other.controller.evaluate(other.elite_tokens)[0].sum()) > float(before)


def test_space_validation_and_aspects(tmp_path):
    space = load_space()
    assert space.sizes == [13, 7, 8, 8, 8, 14, 14, 10, 10]
    loss_only = space.restrict("loss")
    assert loss_only.sizes == [1, 1, 8, 8, 8, 14, 14, 1, 1]
    assert loss_only.choices["width"] == (BASELINE["width"],)
    f = tmp_path / "space.toml"
    f.write_text("[tokens]\nm1 = [1.0, 1.1]\nwidth = [0.8, 1.0]\n")
    assert load_space(f, "backbone,loss").sizes == [1, 1, 2, 8, 8, 14, 14, 10, 2]
    for text, message in [
        ("[tokens]\nm9 = [1]\n", "unknown token"),
        ("[tokens]\nm1 = []\n", "non-empty list"),
        ("[tokens]\nm1 = ['a']\n", "non-numeric"),
        ("[tokens]\nm1 = [0.0]\n", "outside"),
        ("[tokens]\nwidth = [5.0]\n", "outside"),
        ("tokens = 3 3\n", "not valid TOML"),
        ("[other]\n", r"needs a \[tokens\] table"),
    ]:
        f.write_text(text)
        with pytest.raises(FacecleanError, match=message):
            load_space(f)
    with pytest.raises(FacecleanError, match="unknown aspect"):
        space.restrict("optimiser")


def test_ppo_beats_random_on_the_surrogate(tmp_path):
    space = load_space()
    obj = SurrogateObjective(space, seed=0)
    best = {}
    for method in ("ppo", "random"):
        r = search(space, obj, tmp_path / method, steps=30, batch=8, method=method, alpha=0.0)
        best[method] = np.mean([t["reward"] for t in r.trials[-40:]])
    assert best["ppo"] > best["random"] + 0.2


@pytest.mark.parametrize("method", ["tpe", "gaussian"])
def test_tpe_and_gaussian_search_beat_random(tmp_path, method):
    space = load_space()
    obj = SurrogateObjective(space, seed=0)
    means = {}
    for m in (method, "random"):
        r = search(space, obj, tmp_path / m, steps=25, batch=8, method=m, alpha=0.0)
        means[m] = np.mean([t["reward"] for t in r.trials[-40:]])
    assert means[method] > means["random"] + 0.1


def test_gaussian_resume_restores_its_mean(tmp_path):
    space = load_space().restrict("loss")
    obj = SurrogateObjective(space, seed=2)
    full = search(space, obj, tmp_path / "a", steps=6, batch=4, method="gaussian")
    search(space, obj, tmp_path / "b", steps=3, batch=4, method="gaussian")
    resumed = search(space, obj, tmp_path / "b", steps=6, batch=4, method="gaussian", resume=True)
    assert _strip(resumed.trials) == _strip(full.trials)


def test_failing_trials_are_logged_and_the_search_goes_on(tmp_path):
    space = load_space()

    def flaky(combo, seed):
        if combo["m1"] > 1.1:
            raise FloatingPointError("loss diverged to NaN")
        return {"acc": 0.5, "macs": 1.0}

    r = search(space, flaky, tmp_path / "s", steps=3, batch=6, failure_reward=-1.0)
    failed = [t for t in r.trials if t["error"]]
    assert failed and all(t["reward"] == -1.0 for t in failed)
    assert all("diverged" in t["error"] for t in failed)
    assert len(r.trials) == 18
    with pytest.raises(FacecleanError, match="pass --resume"):
        search(space, flaky, tmp_path / "s", steps=3, batch=6)


SCRIPT = """
import sys, time
from faceclean.search.face_search import search
from faceclean.search.surrogate import SurrogateObjective
from faceclean.search.space import load_space
space = load_space()
obj = SurrogateObjective(space, seed=1)
def slow(combo, seed):
    time.sleep(0.05)
    return obj(combo, seed)
search(space, slow, sys.argv[1], steps=6, batch=4, seed=3, resume=True)
"""


def _strip(trials):
    # JSON text, so that NaN log-probs (non-PPO methods) compare equal.
    return [json.dumps({k: v for k, v in t.items() if k != "wall_s"}) for t in trials]


def test_resume_after_a_kill_mid_step_gives_the_same_log(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "full")], check=True)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cut")])
    log = tmp_path / "cut" / "trials.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill inside a step: 9 trials = 2 steps and 1 of the 3rd
        if log.exists() and len(log.read_text().splitlines()) >= 9:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(read_log(tmp_path / "cut"))
    assert 9 <= n_before < 24, "the search finished before it could be killed"
    subprocess.run([sys.executable, str(script), str(tmp_path / "cut")], check=True)
    full, cut = read_log(tmp_path / "full"), read_log(tmp_path / "cut")
    assert [t["trial"] for t in cut] == list(range(24))
    assert _strip(cut) == _strip(full)
    assert json.loads((tmp_path / "cut" / "trials.jsonl").read_text().splitlines()[0])["tokens"]
    assert set(TOKENS) <= set(full[0])


def test_real_search_end_to_end_with_cli(tmp_path):
    from click.testing import CliRunner

    from faceclean.cli import main
    from faceclean.data.synthetic import (
        clustered_embeddings,
        make_face_folder,
        write_embedding_store,
    )

    train_dir = make_face_folder(tmp_path / "train", 8, 6, size=56, seed=0)
    val_dir = make_face_folder(tmp_path / "val", 6, 4, size=56, seed=5)
    # Embeddings that separate the 8 identities, as a trained extractor's would.
    x, y = clustered_embeddings(8, 6, 32, spread=0.5, seed=2)
    store = write_embedding_store(tmp_path / "e.parquet", x, y)
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(store)
    paths = [str(p.relative_to(train_dir)) for p in sorted(train_dir.glob("*/*.png"))]
    t = t.set_column(0, "path", pa.array(paths))
    pq.write_table(t, store)
    args = [
        "search",
        str(store),
        "--val",
        str(val_dir),
        "--data",
        str(train_dir),
        "-o",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--batch",
        "2",
        "--input-size",
        "56",
        "--embedding-size",
        "32",
        "--max-steps",
        "3",
        "--batch-size",
        "8",
        "--far",
        "0.01",
        "--retrain-top",
        "1",
        "--retrain-epochs",
        "1",
        "--signal-seeds",
        "2",
        "--force",  # 3 SGD steps on synthetic faces learn nothing: the check says so
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "signal check (2 seeds" in result.output
    verdict = json.loads((tmp_path / "run" / "signal.json").read_text())
    assert len(verdict["trials"]) == 4 and verdict["sigma"] >= 0
    log = read_log(tmp_path / "run")
    assert len(log) == 4 and all(t["error"] is None for t in log), log
    assert all(0 <= t["acc"] <= 1 and t["macs"] > 0 for t in log)
    assert (tmp_path / "run" / "accuracy.png").exists()
    assert json.loads((tmp_path / "run" / "retrained.json").read_text())[0]["retrained_acc"] >= 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "pass --resume" in again.output


def test_ray_local_instance_runs_the_same_trials(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'faceclean[search]')")
    space = load_space()
    obj = SurrogateObjective(space, seed=4)
    local = search(space, obj, tmp_path / "local", steps=2, batch=3, seed=1)
    ray_run = search(
        space, obj, tmp_path / "ray", steps=2, batch=3, seed=1, workers=2, ray_address="local"
    )
    assert _strip(ray_run.trials) == _strip(local.trials)
