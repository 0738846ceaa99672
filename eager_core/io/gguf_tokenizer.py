"""Building ``tokenizer.json`` and ``tokenizer_config.json`` from a GGUF's tokenizer metadata.

A GGUF stores the vocabulary (``tokenizer.ggml.tokens``), per-token types (1 normal, 2 unknown,
3 control, 4 user-defined, 6 byte), merges or scores, and special token ids. Two vocabularies occur
in Llama-family files:

* ``gpt2``: byte-level BPE (SmolLM2, Llama 3). Every token is spelled in the GPT-2 byte alphabet.
  The pre-tokenizer is chosen from ``tokenizer.ggml.pre`` the way transformers does when it loads the
  same GGUF (Llama 3 regex for the llama-bpe family, GPT-2's regex otherwise), so ids match
  transformers. Note: for ``smollm`` llama.cpp additionally isolates every digit; this differs from
  transformers (and from us) only on whitespace runs or a space directly before a digit.
* ``llama``: sentencepiece BPE with byte fallback (Llama 2, TinyLlama). Merges are rebuilt from the
  scores: a merge is ranked by the score of the token it produces.

Control and unknown tokens become special added tokens, user-defined ones plain added tokens, so
text such as ``<|im_start|>`` is matched whole.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from eager_core.errors import CheckpointError
from eager_core.io.gguf_file import GGUFFile

_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_PRE_TYPES = {"llama3", "llama-v3", "llama-bpe", "smaug-bpe", "falcon3", "dbrx"}


def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map, in order, to U+0100 onwards.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def vocabulary(gg: GGUFFile) -> tuple[list[str], list[int]]:
    """The token strings and their llama.cpp types, checked to be well-formed and of equal length."""
    tokens = gg.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise CheckpointError(f"{gg.path}: tokenizer.ggml.tokens is missing or not a list of strings")
    types = gg.get("tokenizer.ggml.token_type", [1] * len(tokens))
    if not isinstance(types, list) or len(types) != len(tokens) or \
            not all(isinstance(k, int) and not isinstance(k, bool) for k in types):
        raise CheckpointError(f"{gg.path}: tokenizer.ggml.token_type must be one integer per token "
                              f"({len(tokens)} tokens)")
    return tokens, types


def _string_list(gg: GGUFFile, key: str) -> list[str]:
    value = gg.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CheckpointError(f"{gg.path}: {key} must be a list of strings")
    return value


def _byte_level_model(gg: GGUFFile, tokens: list[str]) -> tuple[Tokenizer, set[str]]:
    alphabet = byte_alphabet()
    spelled = set(alphabet.values())
    # A token outside the byte alphabet (a literal space, say) is respelled byte by byte, as transformers does.
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t if set(t) <= spelled else "".join(alphabet[b] for b in t.encode("utf-8")), i)
    merges = []
    for line in _string_list(gg, "tokenizer.ggml.merges"):
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):   # " " would be two empty tokens, which no vocabulary holds
            raise CheckpointError(f"{gg.path}: merge {line!r} is not two tokens separated by one space")
        merges.append((parts[0], parts[1]))
    try:   # the tokenizers library refuses a merge of tokens outside the vocabulary (a corrupt file)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    except Exception as e:  # noqa: BLE001 - its errors have no common type
        raise CheckpointError(f"{gg.path}: the tokenizer's vocabulary and merges disagree ({e})") from None
    pre = gg.get("tokenizer.ggml.pre", "default")
    pre = pre if isinstance(pre, str) else "default"
    prefix = bool(gg.get("tokenizer.ggml.add_space_prefix", False))
    if pre in _LLAMA3_PRE_TYPES:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok, spelled


def spm_merges(tokens: list[str], scores: list[float], skip: set[int]) -> list[tuple[str, str]]:
    """Merges implied by a sentencepiece vocabulary: every split of a token into two vocabulary tokens.

    Ranked by the score of the merged token (higher first), then by the lengths and ids of the halves,
    which reproduces sentencepiece's greedy highest-score-first merging in a BPE model.
    """
    ids = {t: i for i, t in enumerate(tokens) if i not in skip}
    ranked = []
    for token, i in ids.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[i], -len(left), -len(right), ids[left], ids[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece_model(gg: GGUFFile, tokens: list[str], types: list[int]) -> Tokenizer:
    scores = gg.get("tokenizer.ggml.scores")
    if not isinstance(scores, list) or len(scores) != len(tokens) or \
            not all(isinstance(v, (int, float)) for v in scores):
        raise CheckpointError(f"{gg.path}: a sentencepiece vocabulary needs tokenizer.ggml.scores "
                              f"for each of its {len(tokens)} tokens")
    skip = {i for i, kind in enumerate(types) if kind not in (1, _USER_DEFINED)}
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    unk_id = gg.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if isinstance(unk_id, int) and 0 <= unk_id < len(tokens) else None
    tok = Tokenizer(models.BPE(vocab=vocab, merges=spm_merges(tokens, scores, skip), unk_token=unk,
                               fuse_unk=True, byte_fallback=True))
    prefix = bool(gg.get("tokenizer.ggml.add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first" if prefix else "never",
                                                 split=False)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok


def _named(gg: GGUFFile, tokens: list[str], key: str) -> str | None:
    i = gg.get(f"tokenizer.ggml.{key}_token_id")
    return tokens[i] if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(tokens) else None


def build_tokenizer(gg: GGUFFile) -> tuple[Tokenizer, dict]:
    """The ``tokenizers`` object and the ``tokenizer_config.json`` contents for this GGUF."""
    tokens, types = vocabulary(gg)
    kind = gg.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tok, spelled = _byte_level_model(gg, tokens)
        default_bos = False
    elif kind == "llama":
        tok, spelled = _sentencepiece_model(gg, tokens, types), None
        default_bos = True  # llama.cpp adds BOS to sentencepiece vocabularies that do not say otherwise
    else:
        raise CheckpointError(f"{gg.path}: tokenizer model {kind!r} is not supported (expected 'gpt2' or 'llama')")
    named = {key: _named(gg, tokens, key) for key in ("bos", "eos", "unknown", "padding")}
    # As in transformers, the named BOS/EOS/UNK/PAD tokens are special even when not typed as control.
    # In a byte-level vocabulary a "control" token spelled outside the byte alphabet is a llama.cpp mislabel.
    special = [t for t, k in zip(tokens, types) if (k == _CONTROL or t in named.values())
               and (spelled is None or set(t) <= spelled)]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(special)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types)
                    if k == _USER_DEFINED])
    add_bos = bool(gg.get("tokenizer.ggml.add_bos_token", default_bos))
    add_eos = bool(gg.get("tokenizer.ggml.add_eos_token", False))
    bos, eos = named["bos"], named["eos"]
    add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
    single = (f"{bos}:0 " if add_bos else "") + "$A:0" + (f" {eos}:0" if add_eos else "")
    pair = single + (f" {bos}:1" if add_bos else "") + " $B:1" + (f" {eos}:1" if add_eos else "")
    specials = [(t, tok.token_to_id(t)) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos, "eos_token": eos, "unk_token": named["unknown"], "pad_token": named["padding"],
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
    }
    template = gg.get("tokenizer.chat_template")
    if isinstance(template, str):
        config["chat_template"] = template
    return tok, {k: v for k, v in config.items() if v is not None}
