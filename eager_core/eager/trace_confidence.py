"""DeepConf's running trace statistics: token confidence over a sliding window (group confidence).

DeepConf (Fu et al., 2025, "Deep Think with Confidence") scores a trace by its token confidences
C_t = -(1/k) * sum of the log-probabilities of the k most likely tokens at step t (high when the
distribution is peaked). A *group confidence* is the mean of C_t over a window of ``window``
consecutive steps (stride 1), and a trace's *lowest group confidence* is the minimum over its
windows; a trace shorter than one window has the mean of all its steps instead (as the official
code's ``compute_least_grouped``). Online, a trace is stopped at the first step whose full window
(this step's confidence included) has a mean below the threshold.

``TraceConfidence`` keeps these numbers per trace with a running window sum, so a step costs O(1)
whatever the window (the paper uses 2048 tokens). The lowest group confidence is the minimum of
the same running means the stopping rule compared, so what stopped a trace and what it reports
can never disagree.
"""

from __future__ import annotations


class TraceConfidence:
    """One trace's token confidences, its current group confidence and its lowest one so far."""

    __slots__ = ("window", "confs", "_sum", "lowest")

    def __init__(self, window: int):
        self.window = window
        self.confs: list[float] = []      # one per decided step (a stopped trace: its stopping step included)
        self._sum = 0.0                   # sum of the last ``window`` confidences
        self.lowest: float | None = None  # lowest full-window mean so far (None until a window is full)

    def add(self, confidence: float) -> float | None:
        """Append a step's token confidence; return the group confidence of the full window ending here
        (None while fewer than ``window`` steps were seen)."""
        self.confs.append(confidence)
        self._sum += confidence
        if len(self.confs) > self.window:
            self._sum -= self.confs[-self.window - 1]
        if len(self.confs) < self.window:
            return None
        group = self._sum / self.window
        if self.lowest is None or group < self.lowest:
            self.lowest = group
        return group

    def group_confidence(self) -> float | None:
        """The mean of the current full window, or None while the window is not full."""
        return self._sum / self.window if len(self.confs) >= self.window else None

    def lowest_group_confidence(self) -> float | None:
        """DeepConf's trace score: the lowest full-window mean, or the mean of a shorter trace (None if empty)."""
        if self.lowest is not None:
            return self.lowest
        return sum(self.confs) / len(self.confs) if self.confs else None

    def copy(self) -> "TraceConfidence":
        """A branch's statistics start as its parent's: they share every step before the fork."""
        twin = TraceConfidence(self.window)
        twin.confs, twin._sum, twin.lowest = list(self.confs), self._sum, self.lowest
        return twin
