"""The search controller: an LSTM policy trained with PPO (Zhang et al. 2022, Alg. 1).

The policy emits the tokens one by one, each from its own softmax head; the embedding of
the token just chosen is the next step's input (as in NAS controllers). PPO maximises the
expected reward: clipped probability ratio against the policy that sampled, advantage =
reward - an exponential moving-average baseline, an entropy bonus, Adam.
"""

from __future__ import annotations

import torch
from torch import nn


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

    def _logits(self, tokens: torch.Tensor | None, batch: int, generator=None):
        """Walk the sequence; sample when ``tokens`` is None. Returns (tokens, log-probs
        [B], entropies [B])."""
        x = self.start.expand(batch, -1)
        h = torch.zeros(batch, self.hidden)
        c = torch.zeros(batch, self.hidden)
        chosen, logp, ent = [], torch.zeros(batch), torch.zeros(batch)
        for t in range(len(self.sizes)):
            h, c = self.cell(x, (h, c))
            dist = torch.distributions.Categorical(logits=self.heads[t](h))
            if tokens is None:
                probs = dist.probs.detach()
                a = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                a = tokens[:, t]
            logp = logp + dist.log_prob(a)
            ent = ent + dist.entropy()
            chosen.append(a)
            x = self.embed[t](a)
        return torch.stack(chosen, 1), logp, ent

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator | None = None):
        """(tokens int64 [B, T], log-probs [B]) sampled from the policy."""
        tokens, logp, _ = self._logits(None, batch, generator)
        return tokens, logp

    def evaluate(self, tokens: torch.Tensor):
        """(log-probs [B], entropies [B]) of given token sequences under the policy."""
        _, logp, ent = self._logits(tokens, len(tokens))
        return logp, ent


class PPO:
    """PPO on sequence-level rewards with a moving-average baseline."""

    def __init__(
        self,
        controller: Controller,
        lr: float = 5e-4,
        clip: float = 0.2,
        entropy: float = 1e-3,
        epochs: int = 4,
        baseline_decay: float = 0.9,
    ):
        self.controller = controller
        self.optimiser = torch.optim.Adam(controller.parameters(), lr=lr)
        self.clip, self.entropy, self.epochs, self.decay = clip, entropy, epochs, baseline_decay
        self.baseline: float | None = None

    def update(self, tokens: torch.Tensor, old_logp: torch.Tensor, rewards: torch.Tensor) -> float:
        """One PPO update from a batch of sampled sequences and their rewards."""
        mean = float(rewards.mean())
        self.baseline = (
            mean
            if self.baseline is None
            else (self.decay * self.baseline + (1 - self.decay) * mean)
        )
        advantage = rewards - self.baseline
        if len(rewards) > 1 and float(advantage.std()) > 0:
            advantage = advantage / (advantage.std() + 1e-8)
        loss_value = 0.0
        for _ in range(self.epochs):
            logp, ent = self.controller.evaluate(tokens)
            ratio = torch.exp(logp - old_logp)
            surrogate = torch.min(
                ratio * advantage, ratio.clamp(1 - self.clip, 1 + self.clip) * advantage
            )
            loss = -(surrogate.mean() + self.entropy * ent.mean())
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
            loss_value = loss.item()
        return loss_value

    def state_dict(self) -> dict:
        return {
            "controller": self.controller.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "baseline": self.baseline,
        }

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.baseline = state["baseline"]
