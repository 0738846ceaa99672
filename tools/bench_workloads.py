"""The benchmark's workloads: the prompts and sampling settings both engines receive.

Every workload is built once, in the parent process, as plain data (token ids, chat messages,
numbers), so the engine and transformers get exactly the same prompts; each measurement then runs
it in its own process (see bench_runners.py).

    a        one prompt, greedy, ``max_tokens`` new tokens, EOS ignored
    b        one prompt, n=8 samples at temperature 1, EOS ignored (8 x max_tokens tokens)
    c        32 prompts of mixed lengths, greedy, EOS ignored
    d        16 math prompts, M=8 samples each at temperature 0.6, EOS honoured: EAGer-init and
             full parallel in the engine, full parallel (num_return_sequences=8) in transformers
    prefill  one prompt of ~512 tokens, one new token: prompt tokens per second
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WORKLOADS = ("a", "b", "c", "d", "prefill")
DESCRIPTIONS = {
    "a": "1 sequence, greedy",
    "b": "1 prompt, n=8 samples, T=1",
    "c": "32 prompts of mixed lengths, greedy",
    "d": "16 math prompts x M=8, T=0.6",
    "prefill": "1 prompt of ~512 tokens, 1 new token",
}
# Which engines measure each workload; the first one is the reference for the "x HF" column.
ENGINES = {
    "a": ("transformers", "eager_core"),
    "b": ("transformers", "eager_core"),
    "c": ("transformers", "eager_core"),
    "d": ("transformers", "eager_core:parallel", "eager_core:eager-init"),
    "prefill": ("transformers", "eager_core"),
}
NUM_MIXED_PROMPTS = 32
NUM_MATH_PROMPTS = 16
EAGER_M = 8
PREFILL_TOKENS = 512

# Plain prose to cut prompts from; any text works, it only has to tokenize into ordinary tokens.
TEXT = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a can of oil and "
    "a small notebook in which he wrote the state of the sea, the colour of the sky and the ships he "
    "had seen pass. Over the years the notebook grew into a shelf of notebooks, and the shelf into a "
    "library that sailors from distant harbours came to read. They learned from it when the storms "
    "of autumn usually arrived, which currents carried driftwood toward the rocks, and how the fog "
    "could hide a whole fleet for an afternoon and then lift in minutes. When the keeper grew old, a "
    "girl from the village began to help him. She measured the wind with an instrument she had built "
    "from tin cans and a bicycle wheel, and she added tables of numbers to the notebooks: pressure, "
    "temperature, the height of the waves at noon. Together they noticed patterns that neither had "
    "seen alone. A falling barometer and a swell from the west meant rain within a day; a ring "
    "around the moon meant nothing at all, whatever the fishermen said. "
)


@dataclass
class Workload:
    """One workload as data. Invariant: ``prompt_ids`` holds the exact token ids both engines get."""

    name: str
    prompt_ids: list[list[int]]
    max_tokens: int
    greedy: bool
    n: int = 1                          # samples per prompt
    temperature: float = 1.0
    ignore_eos: bool = True
    eos_ids: list[int] = field(default_factory=list)
    pad_id: int = 0
    messages: list[list[dict]] | None = None   # (d): the chat conversations behind prompt_ids

    @property
    def num_rows(self) -> int:
        return len(self.prompt_ids) * self.n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Workload":
        return cls(**d)


def text_tokens(tokenizer: Any, count: int, offset: int = 0) -> list[int]:
    """``count`` token ids of the prose, starting ``offset`` tokens in (the text repeats as needed)."""
    ids = tokenizer.encode(TEXT)
    reps = -(-(offset + count) // len(ids))
    return (ids * reps)[offset:offset + count]


def mixed_lengths(count: int, longest: int) -> list[int]:
    """``count`` prompt lengths spread evenly over [8, longest], interleaved so neighbours differ."""
    shortest = min(8, longest)
    lengths = [shortest + (longest - shortest) * i // max(1, count - 1) for i in range(count)]
    return lengths[0::2] + lengths[1::2][::-1]


def build(name: str, ckpt: Path, max_tokens: int, max_model_len: int, num_mixed: int = NUM_MIXED_PROMPTS,
          num_math: int = NUM_MATH_PROMPTS) -> Workload:
    """Build workload ``name`` (a key of DESCRIPTIONS) for the checkpoint's tokenizer.

    Prompt lengths of (a), (b), (c) and the prefill shrink when the model's context is short (tiny
    test models), so that every prompt plus ``max_tokens`` fits in ``max_model_len``; the math
    prompts of (d) are what they are (a model with a short context rejects them).
    ``num_mixed``/``num_math`` shrink (c)/(d) for tests only; the table's labels assume the defaults.
    """
    from eager_core.io.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(ckpt)
    room = max(8, max_model_len - max_tokens - 1)
    eos = list(tok.eos_token_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    common = dict(max_tokens=max_tokens, eos_ids=eos, pad_id=pad)
    if name == "a":
        return Workload("a", [text_tokens(tok, min(32, room))], greedy=True, **common)
    if name == "b":
        return Workload("b", [text_tokens(tok, min(32, room))], greedy=False, n=8, temperature=1.0, **common)
    if name == "c":
        lengths = mixed_lengths(num_mixed, min(320, room))
        prompts = [text_tokens(tok, n, offset=7 * i) for i, n in enumerate(lengths)]
        return Workload("c", prompts, greedy=True, **common)
    if name == "d":
        from eager_core.eval.datasets import build_prompt, load_dataset

        problems = load_dataset("gsm_symbolic", limit=num_math, seed=0)
        messages = [build_prompt(p) for p in problems]
        # Exactly how LLM.chat encodes: the rendered template already holds any BOS it wants.
        prompts = [tok.encode(tok.apply_chat_template(m, add_generation_prompt=True), add_special_tokens=False)
                   for m in messages]
        return Workload("d", prompts, greedy=False, n=EAGER_M, temperature=0.6, ignore_eos=False,
                        messages=messages, **common)
    if name == "prefill":
        length = min(PREFILL_TOKENS, max_model_len - 2)
        return Workload("prefill", [text_tokens(tok, length)], greedy=True, **{**common, "max_tokens": 1})
    raise ValueError(f"unknown workload {name!r}: expected one of {', '.join(WORKLOADS)}")


def kv_bytes_per_token(cfg: dict[str, Any], elem_size: int) -> int:
    """Bytes of keys and values one cached position holds over all layers (read once per step)."""
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    return cfg["num_hidden_layers"] * 2 * kv_heads * head_dim * elem_size
