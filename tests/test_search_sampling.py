"""The PPO search's sampler: no repeats of tried combinations, and the reward predictor
that screens its proposals."""

import numpy as np
import torch

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
