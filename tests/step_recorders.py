"""A step controller for tests: greedy, and it keeps the logits it was given."""

from __future__ import annotations

import torch


class RecordingGreedy:
    """Takes the argmax; keeps each row's logits by (request id, tokens generated so far) in
    ``rows``, and each ``decide`` call's whole logits in ``steps``."""

    def __init__(self):
        self.rows: dict[tuple[str, int], torch.Tensor] = {}
        self.steps: list[torch.Tensor] = []

    def decide(self, seqs, logits):
        self.steps.append(logits.clone())
        for seq, row in zip(seqs, logits):
            self.rows[(seq.request.request_id, seq.num_generated)] = row.float().clone()
        return logits.argmax(dim=-1).tolist()

    def on_fork(self, parent, child, note):
        pass
