"""Budget arithmetic of EAGer's reallocation, as pure functions (easy to test exhaustively).

The budget unit is the sequence: a call over N prompts may use at most M x N sequences. EAGer-init
uses some; what it saved goes to the prompts that need it:
    eager        prompts with no correct answer yet (those that hit the cap M first), <= M extra each
    eager-adapt  prompts that hit the cap M (label-free), <= 3M extra each
Each selected prompt gets floor(saved / n) (the first ones one more for the remainder), clipped
at its cap. Unlike the official code, nothing here can overshoot: sum(extra) <= saved, always.
"""

from __future__ import annotations


def saved_budget(counts: list[int], max_sequences: int) -> int:
    """Sequences EAGer-init left unused out of M x N."""
    return max(0, max_sequences * len(counts) - sum(counts))


def select_prompts(method: str, saturated: list[bool], solved: list[bool] | None) -> list[int]:
    """Indices of the prompts that receive extra sequences, in priority order."""
    if method == "eager":
        assert solved is not None
        unsolved = [i for i in range(len(saturated)) if not solved[i]]
        return sorted(unsolved, key=lambda i: not saturated[i])   # stable: saturated ones first
    if method == "eager-adapt":
        return [i for i in range(len(saturated)) if saturated[i]]
    return []


def allocate_extra(method: str, counts: list[int], max_sequences: int, saturated: list[bool],
                   solved: list[bool] | None = None) -> list[int]:
    """Extra sequences per prompt after EAGer-init; the total never exceeds the saved budget."""
    extra = [0] * len(counts)
    selected = select_prompts(method, saturated, solved)
    saved = saved_budget(counts, max_sequences)
    if not selected or saved == 0:
        return extra
    cap = max_sequences if method == "eager" else 3 * max_sequences
    base, remainder = divmod(saved, len(selected))
    for rank, i in enumerate(selected):
        extra[i] = min(cap, base + (1 if rank < remainder else 0))
    assert sum(extra) <= saved
    return extra


def split_tokens(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` tokens proportionally to ``weights`` (floor, remainder to the first ones)."""
    if not weights or sum(weights) == 0:
        return [0] * len(weights)
    shares = [total * w // sum(weights) for w in weights]
    leftover = total - sum(shares)
    for i in sorted(range(len(weights)), key=lambda i: -weights[i]):
        if leftover == 0:
            break
        if weights[i]:
            shares[i] += 1
            leftover -= 1
    return shares
