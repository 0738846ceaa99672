"""One evaluation record per (prompt, setting), and the metrics of a setting from its records.

A record is the JSON line written to ``generations.jsonl``. It holds everything the metrics need
(per-sequence answers and correctness, the exact generated-token count of the prompt), enough to
audit a run (texts, branch tree, branch events), and the per-token entropies each sequence added
itself: ``entropies`` of sequence ``i`` cover only the tokens after its ``branch_step``, so every
generated position appears once across a prompt's sequences, as in #T.

Invariant: ``setting_metrics`` reads nothing but records, so a resumed run and an uninterrupted
run with the same records report the same accuracy and token metrics.

DeepConf methods (``deepconf``, ``eager-deepconf``) add each sequence's ``lowest_group_confidence``
and the prompt's ``confidence_threshold``. A sequence they stopped for low confidence
(``finish_reason == "pruned"``) was cut mid-way: it costs its tokens (#T, #S) but gives no answer,
so it counts in neither Pass@k nor a vote (``answering``). Their weighted Cons@k is DeepConf's
vote: only unpruned traces whose lowest group confidence is at least the threshold vote, each
with that confidence as its weight; their plain Cons@k is the unweighted majority of every
unpruned trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eager_core.eval.answers import extract_answer
from eager_core.eval.datasets import Problem
from eager_core.eval.metrics import majority_vote, summarize, weighted_vote

ENTROPY_DECIMALS = 3   # enough for a histogram; keeps generations.jsonl about half the size
PRUNED = "pruned"      # the finish reason of a trace stopped for low confidence (eager/deepconf.py)
_SHORT = {"confidence_percentile": "q", "warmup_traces": "W", "window_size": "win", "top_k_confidence": "kc"}


@dataclass(frozen=True)
class Setting:
    """One point of a sweep. ``theta`` is ``None`` for ``parallel``, which has no threshold."""

    method: str
    theta: float | None
    max_sequences: int
    extra: tuple[tuple[str, float | int], ...] = ()   # DeepConf methods: their parameters, by name

    def key(self) -> dict:
        """The ``setting`` field of a record (with ``method`` and ``prompt_id``, the resume key).
        DeepConf's parameters are part of it, so a sweep over them adds settings instead of mixing them."""
        return {"theta": self.theta, "M": self.max_sequences, **dict(self.extra)}

    def label(self) -> str:
        theta = "" if self.theta is None else f" θ={self.theta:g}"
        return f"{self.method}{theta}{extra_label(self.extra)} M={self.max_sequences}"


def extra_label(extra: tuple[tuple[str, float | int], ...]) -> str:
    """DeepConf's parameters of a setting, short (" q=90 W=4 win=16 kc=20"); "" for other methods."""
    return "".join(f" {_SHORT.get(k, k)}={v:g}" for k, v in extra)


def output_record(problem: Problem, setting: Setting, output, batch: int, batch_stats: dict,
                  checker: Callable[[str, str], bool]) -> dict:
    """The record of ``problem`` under ``setting`` from its ``EagerOutput``.

    ``batch_stats`` (wall time, KV peak, tokens of the whole ``llm.eager`` call) is repeated on
    every record of the batch, so each line is self-contained and a batch's cost survives even if
    only some of its lines were written before an interruption.
    """
    sequences = []
    lows = getattr(output, "lowest_group_confidence", None)   # DeepConf methods only
    for i, seq in enumerate(output.sequences):
        own = seq.entropies[seq.branch_step:] if seq.entropies else []
        sequences.append({
            "text": seq.text,
            "answer": extract_answer(seq.text),
            "correct": bool(checker(seq.text, problem.answer)),
            "parent": seq.parent,
            "branch_step": seq.branch_step,
            "branch_entropy": seq.branch_entropy,
            "round": seq.round,
            "num_tokens": len(seq.token_ids),
            "finish_reason": seq.finish_reason,
            "entropies": [round(float(e), ENTROPY_DECIMALS) for e in own],
        })
        if lows is not None:
            sequences[-1]["lowest_group_confidence"] = lows[i]
    record = {
        "prompt_id": problem.id,
        "method": setting.method,
        "setting": setting.key(),
        "batch": batch,
        "question": problem.question,
        "gold": problem.answer,
        "generated_tokens": int(output.generated_tokens),
        "num_sequences": len(sequences),
        "saturated": bool(output.saturated),
        "sequences": sequences,
        "branch_events": [_event(ev) for ev in output.branch_events],
        "batch_stats": batch_stats,
    }
    if lows is not None:
        record.update(confidence_threshold=output.confidence_threshold, warmup_traces=output.warmup_traces)
    return record


def _event(ev: dict) -> dict:
    # Drop anything not JSON-like (token id lists are fine) so a new engine field cannot break writes.
    return {k: v for k, v in ev.items() if isinstance(v, (int, float, str, list, type(None)))}


def setting_metrics(records: Sequence[dict], setting: Setting, ks: Sequence[int] = (1,)) -> dict:
    """``summarize`` over the records of one setting, plus the setting itself and its cost.

    Wall time is the sum over distinct batches of the measured ``llm.eager`` time; the KV peak is
    the largest of the batches. Records are taken in the order given (the caller passes dataset
    order, so per-prompt lists line up across settings).
    """
    if not records:
        raise ValueError(f"setting_metrics: no records for {setting.label()}")
    flags = [[s["correct"] for s in answering(r)] for r in records]
    answers = [[s["answer"] for s in answering(r)] for r in records]
    batches: dict[int, dict] = {}
    for r in records:
        batches.setdefault(r["batch"], r["batch_stats"])
    wall = sum(b["wall_s"] for b in batches.values())
    engine_wall = sum(b.get("engine_wall_s", 0.0) for b in batches.values())
    kv_peak = max(b.get("kv_blocks_peak", 0) for b in batches.values())
    row = {"method": setting.method, "theta": setting.theta, "max_sequences": setting.max_sequences,
           **dict(setting.extra)}
    row.update(summarize(flags, answers, [r["generated_tokens"] for r in records], ks=ks,
                         wall_s=wall, kv_blocks_peak=kv_peak))
    row["mean_sequences"] = sum(r["num_sequences"] for r in records) / len(records)   # pruned ones cost too
    weighted = [prompt_outcomes(r)["weighted_cons"] for r in records]
    row["weighted_cons_at_k"] = None if None in weighted else sum(weighted) / len(weighted)
    row["pruned_share"] = (sum(s["finish_reason"] == PRUNED for r in records for s in r["sequences"])
                           / max(1, sum(r["num_sequences"] for r in records)))
    row["tokens_per_prompt"] = row["num_tokens"] / row["n_prompts"]
    row["engine_wall_s"] = engine_wall
    row["n_batches"] = len(batches)
    row["saturated_share"] = sum(r["saturated"] for r in records) / len(records)
    return row


def answering(record: dict) -> list[dict]:
    """The sequences of a record that give an answer: all but those pruned for low confidence."""
    return [s for s in record["sequences"] if s["finish_reason"] != PRUNED]


def prompt_outcomes(record: dict) -> dict:
    """One problem's 0/1 outcomes, as the setting's means count them: ``pass`` (Pass@k), ``cons``
    (majority vote, Cons@k) and ``weighted_cons`` (DeepConf's vote; None for other methods)."""
    seqs = answering(record)
    winner = majority_vote([s["answer"] for s in seqs])
    out = {"pass": float(any(s["correct"] for s in seqs)),
           "cons": float(winner is not None and bool(seqs[winner]["correct"])), "weighted_cons": None}
    if "confidence_threshold" in record:
        s_bar = record["confidence_threshold"]
        weights = [s.get("lowest_group_confidence") for s in seqs]
        weights = [w if w is not None and (s_bar is None or w >= s_bar) else None for w in weights]
        winner = weighted_vote([s["answer"] for s in seqs], weights)
        out["weighted_cons"] = float(winner is not None and bool(seqs[winner]["correct"]))
    return out


def own_entropies(records: Sequence[dict]) -> list[float]:
    """Every generated position's entropy across ``records``, each position once."""
    return [e for r in records for s in r["sequences"] for e in s["entropies"]]
