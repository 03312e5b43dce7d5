"""The PPO search's sampler: no repeats of tried combinations, and the reward predictor
that screens its proposals."""

import numpy as np
import pytest
import torch

from faceclean.errors import FacecleanError
from faceclean.search.controller import Controller
from faceclean.search.predictor import one_hot, ridge_predict


def test_sample_novel_avoids_tried_combinations_and_repeats_within_the_batch():
    torch.manual_seed(0)
    controller = Controller([2, 3])  # six combinations in all
    tried = {(0, 0), (1, 2)}
    tokens, logp = controller.sample_novel(4, tried, torch.Generator().manual_seed(0))
    rows = [tuple(r) for r in tokens.tolist()]
    assert len(set(rows)) == 4 and not set(rows) & tried
    # the log-probs are the policy's own for those sequences
    own, _ = controller.evaluate(tokens)
    assert torch.allclose(own, logp, atol=1e-6)


def test_sample_novel_tops_up_with_repeats_only_when_nothing_new_is_left():
    torch.manual_seed(0)
    controller = Controller([2, 2])  # four combinations
    tried = {(0, 0), (0, 1), (1, 0)}
    tokens, _ = controller.sample_novel(3, tried, torch.Generator().manual_seed(0))
    rows = [tuple(r) for r in tokens.tolist()]
    assert rows[0] == (1, 1) and len(rows) == 3  # the only new one comes first
    assert set(rows[1:]) <= tried | {(1, 1)}


def test_sample_novel_is_deterministic_given_the_generator():
    torch.manual_seed(0)
    controller = Controller([13, 7, 8])
    a, _ = controller.sample_novel(8, set(), torch.Generator().manual_seed(5))
    b, _ = controller.sample_novel(8, set(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_one_hot_marks_one_choice_per_token():
    x = one_hot(np.array([[0, 2], [1, 0]]), [2, 3])
    assert x.tolist() == [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]]


def test_ridge_predict_ranks_an_additive_reward():
    rng = np.random.default_rng(0)
    sizes = [5, 4, 6]
    effects = [rng.normal(size=n) for n in sizes]
    tokens = np.stack([rng.integers(0, n, 200) for n in sizes], 1)
    reward = sum(effects[t][tokens[:, t]] for t in range(3)) + rng.normal(0, 0.1, 200)
    cand = np.stack([rng.integers(0, n, 50) for n in sizes], 1)
    truth = sum(effects[t][cand[:, t]] for t in range(3))
    pred = ridge_predict(tokens, reward, cand, sizes)
    assert np.corrcoef(pred, truth)[0, 1] > 0.95


def test_kernel_predict_fits_a_bump_and_its_leave_one_out_picks_a_scale():
    from faceclean.search.predictor import kernel_predict

    rng = np.random.default_rng(1)
    sizes = [11, 11, 11]
    tokens = np.stack([rng.integers(0, n, 150) for n in sizes], 1)
    cand = np.stack([rng.integers(0, n, 60) for n in sizes], 1)

    def bump(t):  # one optimum at (0.7, 0.2, 0.5) in index units
        u = t / 10.0
        return np.exp(-((u - [0.7, 0.2, 0.5]) ** 2).sum(1) / (2 * 0.2**2))

    pred = kernel_predict(tokens, bump(tokens) + rng.normal(0, 0.01, 150), cand, sizes)
    assert np.corrcoef(pred, bump(cand))[0, 1] > 0.9
    assert np.argmax(pred) == np.argmax(bump(cand))
    flat = kernel_predict(tokens, np.full(150, 0.5), cand, sizes)  # no signal: the mean
    assert np.allclose(flat, 0.5)


def test_screen_keeps_the_best_predicted_and_bounds_the_history():
    from faceclean.search.predictor import screen

    sizes = [6, 6]
    history = [
        {"tokens": [a, b], "reward": -((a - 4) ** 2) - (b - 1) ** 2 + 0.0}
        for a in range(6)
        for b in range(6)
        if (a, b) != (4, 1)
    ]
    cand = np.array([[0, 5], [4, 1], [3, 1], [5, 5]])
    pick, predicted = screen(cand, history, sizes, keep=2)
    assert pick.tolist() == [1, 2] and predicted[0] >= predicted[1]
    # past max_history the fit sees the best half and the most recent half, still right
    pick, _ = screen(cand, history, sizes, keep=1, max_history=10)
    assert pick.tolist() == [1]


def test_ppo_search_runs_untried_screened_combinations(tmp_path):
    from faceclean.search.face_search import search
    from faceclean.search.space import load_space
    from faceclean.search.surrogate import SurrogateObjective

    space = load_space()
    obj = SurrogateObjective(space, seed=0)
    r = search(space, obj, tmp_path / "s", steps=6, batch=4, warmup_trials=8, proposals=4)
    tokens = [tuple(t["tokens"]) for t in r.trials]
    assert len(set(tokens)) == len(tokens)  # no combination run twice
    predicted = [t["predicted_reward"] for t in r.trials]
    assert predicted[:8] == [None] * 8  # the uniform warm-up is not screened
    assert all(isinstance(p, float) for p in predicted[8:])
    with pytest.raises(FacecleanError, match="proposals"):
        search(space, obj, tmp_path / "t", steps=1, batch=4, proposals=0)
