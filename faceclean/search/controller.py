"""The search controller: an LSTM policy trained with PPO (Zhang et al. 2022, Alg. 1).

The policy emits the tokens one by one, each from its own softmax head; the embedding of
the token just chosen is the next step's input (as in NAS controllers).

PPO here is shaped for what a search gives it: a few (B = 4-16) noisy rewards per update on a
sequence of nine tokens. Each choice of the update is there because its absence was
measured to stall or collapse the search (benchmarks/bench_search.py):

- the advantage is centred on the batch (``"mean"``: (r - mean) / std; or ``"rank"``:
  centred ranks in [-1, 1]), so half of every batch is pushed down. An advantage that is
  only normalised by its std against a slow moving-average baseline was positive for most
  of a batch in most updates and pushed every sampled sequence up until the policy
  collapsed;
- the probability ratio is clipped per token, not once on the product of nine ratios (a
  sequence ratio leaves the clip range after a tiny per-token change and then stops every
  gradient), and the epochs stop early once the approximate KL to the sampling policy
  passes ``target_kl``;
- elite replay (priority-queue training): the 16 best distinct sequences seen so far are
  also learned from, by their log-likelihood (weight ``elite_coef``), so a good but rare
  trial keeps pulling the policy after its batch is gone (measured on the tuning objectives:
  faster in the first 100-200 trials, at par by 400);
- an entropy bonus, plus a hinge that pushes back hard once a token's entropy falls below
  ``entropy_floor`` x its uniform entropy, so the controller keeps exploring;
- the search draws only combinations not tried yet (:meth:`Controller.sample_novel`), and
  draws more than it runs, leaving the pick to a reward predictor
  (:mod:`faceclean.search.predictor`; see :mod:`faceclean.search.search_loop`).

Entropies are in nats; ``policy_entropy`` is the sum over tokens (uniform = sum log n).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the controller's tiny tensor ops on one thread: with OpenMP threads on a busy
    machine they were ~2x slower (measured), and trials in this process keep theirs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Controller(nn.Module):
    """LSTM policy over a sequence of categorical tokens of the given ``sizes``."""

    def __init__(self, sizes: list[int], hidden: int = 64):
        super().__init__()
        self.sizes = list(sizes)
        self.hidden = hidden
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.embed = nn.ModuleList(nn.Embedding(n, hidden) for n in sizes)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)

    def _walk(self, tokens: torch.Tensor | None, batch: int, generator=None):
        """Walk the sequence; sample when ``tokens`` is None. Returns (tokens [B, T],
        per-token log-probs [B, T], per-token entropies [B, T])."""
        x = self.start.expand(batch, -1)
        h = torch.zeros(batch, self.hidden)
        c = torch.zeros(batch, self.hidden)
        chosen, logp, ent = [], [], []
        for t in range(len(self.sizes)):
            h, c = self.cell(x, (h, c))
            dist = torch.distributions.Categorical(logits=self.heads[t](h))
            if tokens is None:
                a = torch.multinomial(dist.probs.detach(), 1, generator=generator).squeeze(1)
            else:
                a = tokens[:, t]
            logp.append(dist.log_prob(a))
            ent.append(dist.entropy())
            chosen.append(a)
            x = self.embed[t](a)
        return torch.stack(chosen, 1), torch.stack(logp, 1), torch.stack(ent, 1)

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator | None = None):
        """(tokens int64 [B, T], per-token log-probs [B, T]) sampled from the policy."""
        tokens, logp, _ = self._walk(None, batch, generator)
        return tokens, logp

    @torch.no_grad()
    def sample_novel(
        self,
        batch: int,
        seen: set[tuple[int, ...]],
        generator: torch.Generator | None = None,
        rounds: int = 10,
    ):
        """Like :meth:`sample`, but each sequence differs from those in ``seen`` (the
        combinations already tried) and from the rest of the batch: candidates are drawn
        from the policy, ``4 * batch`` per round for at most ``rounds`` rounds, and the
        first new ones are kept. Only when the policy is so sharp that too few new ones turn
        up is the batch topped up with repeats (in the order drawn).

        Re-running a combination only re-measures its noise: before this, a third of the
        trials of a 400-trial PPO search were repeats. The sequences are then drawn from the
        policy restricted to the untried ones; PPO still takes their probability under the
        whole policy, which scales every ratio of a batch by the same factor 1 - P(tried).
        """
        keep, repeats = [], []
        taken = set(seen)
        for _ in range(rounds):
            tokens, logp = self.sample(4 * batch, generator)
            for row, lp in zip(tokens, logp, strict=True):
                key = tuple(row.tolist())
                if key in taken:
                    repeats.append((row, lp))
                    continue
                taken.add(key)
                keep.append((row, lp))
                if len(keep) == batch:
                    break
            if len(keep) == batch:
                break
        keep += repeats[: batch - len(keep)]
        return torch.stack([r for r, _ in keep]), torch.stack([lp for _, lp in keep])

    def evaluate(self, tokens: torch.Tensor):
        """(per-token log-probs [B, T], per-token entropies [B, T]) of given sequences."""
        _, logp, ent = self._walk(tokens, len(tokens))
        return logp, ent

    @torch.no_grad()
    def entropy(self, n: int = 64, generator: torch.Generator | None = None) -> float:
        """Policy entropy in nats (sum over tokens), estimated on ``n`` sampled sequences
        (the exact entropy of an autoregressive policy needs every prefix)."""
        _, _, ent = self._walk(None, n, generator)
        return float(ent.sum(1).mean())

    def uniform_entropy(self) -> float:
        """The entropy of the uniform policy, sum of log n over tokens (nats)."""
        return float(sum(math.log(n) for n in self.sizes))


def advantages(rewards: torch.Tensor, kind: str = "mean") -> torch.Tensor:
    """Batch-centred advantages: ``mean`` (r - mean) / std, ``rank`` centred ranks in
    [-1, 1] (ties share their mean rank). All zero when the rewards are all equal."""
    n = len(rewards)
    if n < 2 or float(rewards.max() - rewards.min()) == 0:
        return torch.zeros_like(rewards)
    if kind == "rank":
        order = rewards.argsort()
        ranks = torch.empty_like(rewards)
        ranks[order] = torch.arange(n, dtype=rewards.dtype)
        for v in rewards.unique():  # ties: mean rank, so equal rewards get equal advantages
            same = rewards == v
            ranks[same] = ranks[same].mean()
        return 2 * ranks / (n - 1) - 1
    if kind != "mean":
        raise ValueError(f"unknown advantage {kind!r}")
    return (rewards - rewards.mean()) / (rewards.std() + 1e-8)


class PPO:
    """PPO on sequence-level rewards: batch-centred advantages, per-token clipping, a KL
    early stop and an entropy bonus with a floor (see the module docstring).

    Args:
        lr: Adam learning rate of the controller.
        clip: per-token ratio clip (1 +- clip).
        entropy: entropy bonus coefficient (per token, nats).
        epochs: gradient epochs per batch (at most; the KL stop may end them earlier).
        target_kl: stop the epochs once mean KL(sampling || current) per sequence exceeds it.
        entropy_floor: per-token entropy floor as a fraction of log n.
        advantage: "mean" or "rank" (see :func:`advantages`).
        history: batches learned from per update (1: only the one just run).
        elite: size of the elite set, the best distinct sequences seen so far (0: off).
        elite_coef: weight of the elite term, the mean log-likelihood of the elite
            sequences (priority-queue training: off-policy, so a likelihood term rather
            than a ratio; per token, summed over the sequence).
        entropy_after: the entropy bonus once ``entropy_steps`` updates have run (None:
            ``entropy`` throughout).
        entropy_steps: updates run with ``entropy`` before ``entropy_after`` applies.
    """

    def __init__(
        self,
        controller: Controller,
        lr: float = 1e-2,
        clip: float = 0.2,
        entropy: float = 1e-2,
        epochs: int = 4,
        target_kl: float = 0.2,
        entropy_floor: float = 0.1,
        advantage: str = "mean",
        history: int = 1,
        elite: int = 16,
        elite_coef: float = 0.5,
        entropy_after: float | None = None,
        entropy_steps: int = 0,
    ):
        self.controller = controller
        self.optimiser = torch.optim.Adam(controller.parameters(), lr=lr)
        self.clip, self.entropy, self.epochs = clip, entropy, epochs
        self.target_kl, self.floor, self.advantage = target_kl, entropy_floor, advantage
        self.history = history
        self.buffer: list[dict] = []  # the last ``history`` batches, this one included
        self.log_n = torch.tensor([math.log(n) for n in controller.sizes])
        self.elite, self.elite_coef = elite, elite_coef
        self.entropy_after, self.entropy_steps = entropy_after, entropy_steps
        self.updates = 0
        self.elite_tokens = torch.zeros(0, len(controller.sizes), dtype=torch.long)
        self.elite_rewards = torch.zeros(0)

    def add_elite(self, tokens: torch.Tensor, rewards: torch.Tensor) -> None:
        """Keep the ``elite`` best distinct sequences (a repeat keeps its best reward)."""
        if self.elite <= 0:
            return
        tok = torch.cat([self.elite_tokens, tokens.long()])
        rew = torch.cat([self.elite_rewards, rewards.float()])
        order = rew.argsort(descending=True, stable=True)
        keep, seen = [], set()
        for i in order.tolist():
            key = tuple(tok[i].tolist())
            if key not in seen:
                seen.add(key)
                keep.append(i)
            if len(keep) == self.elite:
                break
        self.elite_tokens, self.elite_rewards = tok[keep], rew[keep]

    def update(self, tokens: torch.Tensor, old_logp: torch.Tensor, rewards: torch.Tensor) -> dict:
        """One PPO update from sampled sequences ``tokens`` [B, T], the per-token log-probs
        under the policy that sampled them [B, T], and their rewards [B]. Returns
        {"loss", "kl", "epochs"} of the last epoch run. With ``history`` > 1 the last
        batches are learned from again (their ratios against the policy that sampled them)
        and the advantages are centred on all of their rewards."""
        self.add_elite(tokens, rewards)
        bonus = self.entropy
        if self.entropy_after is not None and self.updates >= self.entropy_steps:
            bonus = self.entropy_after
        self.updates += 1
        self.buffer.append({"tokens": tokens, "logp": old_logp, "rewards": rewards.float()})
        self.buffer = self.buffer[-self.history :]
        tokens = torch.cat([b["tokens"] for b in self.buffer])
        old_logp = torch.cat([b["logp"] for b in self.buffer])
        rewards = torch.cat([b["rewards"] for b in self.buffer])
        adv = advantages(rewards, self.advantage)[:, None]  # [N, 1]
        stats = {"loss": 0.0, "kl": 0.0, "epochs": 0}
        use_elite = self.elite_coef > 0 and len(self.elite_tokens) > 0
        if not bool(adv.abs().sum() > 0) and not use_elite:
            return stats  # equal rewards: nothing to learn from this batch
        for epoch in range(self.epochs):
            logp, ent = self.controller.evaluate(tokens)
            log_ratio = logp - old_logp
            kl = float(((log_ratio.exp() - 1) - log_ratio).sum(1).mean().detach())  # k3 estimator
            if epoch > 0 and kl > self.target_kl:
                break
            ratio = log_ratio.exp()
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv)
            ent_mean = ent.mean(0)  # per token [T]
            floor_gap = torch.relu(self.floor * self.log_n - ent_mean) / self.log_n.clamp(min=1e-6)
            loss = (
                -surrogate.sum(1).mean()
                - bonus * ent.sum(1).mean()
                + floor_gap.sum() * 10.0  # the floor is a wall, not a preference
            )
            if use_elite:
                elite_logp, _ = self.controller.evaluate(self.elite_tokens)
                loss = loss - self.elite_coef * elite_logp.sum(1).mean()
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
            stats = {"loss": loss.item(), "kl": kl, "epochs": epoch + 1}
        return stats

    def state_dict(self) -> dict:
        return {
            "controller": self.controller.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "buffer": self.buffer,
            "elite_tokens": self.elite_tokens,
            "elite_rewards": self.elite_rewards,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.buffer = list(state.get("buffer", []))
        if "elite_tokens" in state:
            self.elite_tokens = state["elite_tokens"]
            self.elite_rewards = state["elite_rewards"]
        self.updates = int(state.get("updates", 0))
