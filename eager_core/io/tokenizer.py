"""The tokenizer of a checkpoint folder: ``tokenizer.json`` (via ``tokenizers``), its config and chat template.

Encoding follows transformers' ``AutoTokenizer`` for the same folder:

* ``encode(text, add_special_tokens)`` runs the ``tokenizers`` pipeline; with ``add_special_tokens``
  the post-processor of ``tokenizer.json`` adds what it declares (BOS for Llama-style tokenizers,
  nothing for SmolLM2). Like transformers 5 loading a folder, the ``add_bos_token`` /
  ``add_eos_token`` flags of ``tokenizer_config.json`` do not override ``tokenizer.json``.
* ``decode(ids, skip_special_tokens)`` drops special added tokens when asked and applies
  ``clean_up_tokenization_spaces`` when the config asks for it (never for BPE models, as transformers).

EOS ids come from ``generation_config.json`` (int or list), else ``config.json``, else the
tokenizer config's ``eos_token``.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from eager_core.errors import CheckpointError
from eager_core.io.chat_template import render_chat_template
from eager_core.io.checkpoint import checkpoint_dir, read_json_file
from eager_core.io.stream_decoder import StreamDecoder
from eager_core.validation import clean_text

__all__ = ["Tokenizer", "StreamDecoder"]

_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token_text(value: object) -> str | None:
    """A special token from tokenizer_config.json: a string, or a serialised AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _as_id_list(value: object) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _read_optional_object(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = read_json_file(path, CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _clean_up_spaces(text: str) -> str:
    # transformers' clean_up_tokenization: undo the spaces a word-level tokenizer put before punctuation.
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


class Tokenizer:
    """A checkpoint's tokenizer. Build it with ``Tokenizer.from_dir``."""

    def __init__(self, backend: _HFTokenizer, config: dict, eos_token_ids: list[int],
                 source: Path | None = None) -> None:
        self._tok = backend
        self._config = config
        self._source = source
        self.special_tokens: dict[str, str] = {}
        for name in _SPECIAL_NAMES:
            text = _token_text(config.get(name))
            if text is not None and backend.token_to_id(text) is not None:
                self.special_tokens[name] = text
        self.chat_template: str | None = self._pick_template(config.get("chat_template"))
        # transformers 5 skips this clean-up for BPE models (it would delete real spaces) unless forced.
        force = config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
        self._cleanup = bool(config.get("clean_up_tokenization_spaces", False)) and (
            type(backend.model).__name__ != "BPE" or bool(force))
        self._eos_ids = eos_token_ids or ([self.token_to_id(self.special_tokens["eos_token"])]
                                          if "eos_token" in self.special_tokens else [])
        added = backend.get_added_tokens_decoder()
        self._special_ids = {i for i, tok in added.items() if tok.special}
        self._special_ids |= {self.token_to_id(t) for t in self.special_tokens.values()}

    @staticmethod
    def _pick_template(template: object) -> str | None:
        # Older configs store a list of named templates; "default" is the chat one.
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        return template if isinstance(template, str) else None

    @classmethod
    def from_dir(cls, ckpt_dir: str | Path) -> "Tokenizer":
        """Load ``tokenizer.json`` + ``tokenizer_config.json`` (+ generation/model config for EOS ids)."""
        folder = checkpoint_dir(ckpt_dir)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the checkpoint has no tokenizer.json "
                                  "(only fast tokenizers in tokenizer.json format are supported)")
        try:
            backend = _HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust library raises plain Exception subclasses for any parse failure
            raise CheckpointError(f"{path}: cannot load tokenizer: {str(e).splitlines()[0] if str(e) else e!r}") from e
        config = _read_optional_object(folder / "tokenizer_config.json")
        eos: list[int] = []
        for name in ("generation_config.json", "config.json"):
            eos = _as_id_list(_read_optional_object(folder / name).get("eos_token_id"))
            if eos:
                break
        return cls(backend, config, eos, source=folder)

    # --- encoding and decoding -------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; special tokens written in the text (e.g. ``<|im_start|>``) stay whole."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        # Lone surrogates (not valid Unicode) become U+FFFD rather than an error deep in the tokenizer.
        return self._tok.encode(clean_text(text), add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped when ``skip_special_tokens`` is true."""
        text = self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return _clean_up_spaces(text) if self._cleanup else text

    def stream_decoder(self, skip_special_tokens: bool = True) -> StreamDecoder:
        """A fresh incremental decoder bound to this tokenizer."""
        return StreamDecoder(self.decode, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str | None:
        """The vocabulary string of id ``i`` (byte-level spelling), or None if out of range."""
        return self._tok.id_to_token(int(i))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    # --- chat ------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """Render ``messages`` (dicts with "role" and "content") with the checkpoint's chat template.

        ``chat_template=`` overrides the checkpoint's template; other keywords become template
        variables. Raises ``CheckpointError`` if there is no template, ``RequestError`` if it fails.
        """
        template = kwargs.pop("chat_template", None) or self.chat_template
        if template is None:
            where = self._source / "tokenizer_config.json" if self._source else "tokenizer_config.json"
            raise CheckpointError(f"{where} has no chat_template, so chat messages cannot be formatted; "
                                  "pass plain prompts instead")
        return clean_text(render_chat_template(template, messages, add_generation_prompt=add_generation_prompt,
                                               special_tokens=self.special_tokens, **kwargs))

    # --- properties ------------------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end generation (primary EOS first)."""
        return list(self._eos_ids)

    @property
    def bos_token_id(self) -> int | None:
        bos = self.special_tokens.get("bos_token")
        return self.token_to_id(bos) if bos is not None else None

    @property
    def pad_token_id(self) -> int | None:
        pad = self.special_tokens.get("pad_token")
        return self.token_to_id(pad) if pad is not None else None

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (may be below the model's embedding rows)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> set[int]:
        """Ids of special tokens: special added tokens and the named BOS/EOS/UNK/PAD tokens."""
        return set(self._special_ids)

    def __repr__(self) -> str:
        return f"Tokenizer(source={self._source}, vocab_size={self.vocab_size}, eos={self._eos_ids})"
