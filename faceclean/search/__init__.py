"""Stage 4, search: the joint search over cleaning thresholds, margin loss and backbone.

Modules: ``space`` (the nine tokens, the TOML search space, difficulty), ``controller``
(the LSTM controller and PPO), ``search_loop`` (the resumable search loop and its defaults),
``face_search`` (the CLI's ``faceclean search`` on real faces; re-exports the loop), ``state``
(the JSON + tensors state file), ``trial_log`` (trials.jsonl), ``methods`` (random, TPE and
Gaussian search, the spawn pool and the Ray executor), ``trial`` (one trial on real data:
clean, train, score), ``signal`` (the signal check: trial noise and chance before a search),
``plots``, ``surrogate`` (a cheap synthetic objective for tests and
benchmarks).

Exports: ``search`` (the loop), ``run_search`` (the CLI's search on real trials),
``read_log``, ``TOKENS``, ``BASELINE``, ``SearchSpace``, ``load_space``.
"""

from faceclean._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "search": "face_search",
        "run_search": "face_search",
        "read_log": "trial_log",
        "DEFAULTS": "face_search",
        "SearchResult": "face_search",
        "TOKENS": "space",
        "BASELINE": "space",
        "SearchSpace": "space",
        "load_space": "space",
    },
)
__all__ = sorted(__dir__())
