"""A GRU that predicts the next episode's vector as a residual from the current one."""

from __future__ import annotations

import torch
from torch import nn


class NextEpisodeGRU(nn.Module):
    """Reads up to C episode vectors and returns the next one, L2-normalised.

    The output layer starts at zero, so an untrained model predicts "the current episode again"
    (copy-last): training can only move it away where that pays on validation.
    """

    def __init__(self, dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, contexts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """contexts (B, C, d) left-padded; lengths (B,) >= 1; returns (B, d) unit vectors."""
        c = contexts.shape[1]
        # Left padding: the real episodes end at the last step, so the final hidden state is the
        # state after the most recent episode. Zero-padded steps before them are skipped by
        # taking the packed sequence of the real steps only.
        starts = c - lengths
        # Rotate each row so that its real steps come first, as packing expects.
        idx = (torch.arange(c, device=contexts.device)[None, :] + starts[:, None]) % c
        rotated = torch.gather(contexts, 1, idx[:, :, None].expand(-1, -1, contexts.shape[2]))
        packed = nn.utils.rnn.pack_padded_sequence(
            rotated, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed)
        current = contexts[:, -1, :]
        return nn.functional.normalize(current + self.out(h[-1]), dim=-1)
