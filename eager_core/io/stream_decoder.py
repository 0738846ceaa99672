"""Incremental detokenisation for streaming output.

Decoding one token at a time is wrong twice over: a character such as an emoji may span several
byte-level tokens (each alone decodes to U+FFFD), and some decoders change a token's text depending on
its neighbours (sentencepiece strips the leading space of the first token). So we decode a short
window of recent tokens and emit only the text that the newest tokens added, holding text back while
it ends in an incomplete character.

Invariant: the concatenation of everything ``push`` returned plus ``flush()`` equals
``decode(all ids)`` for byte-level and sentencepiece tokenizers.
"""

from __future__ import annotations

from typing import Callable, Iterable

_REPLACEMENT = "\ufffd"


class StreamDecoder:
    """Feed token ids one at a time (or a few at once) and get back the newly completed text.

    ``decode`` is a function from a list of ids to text, typically ``Tokenizer.decode`` (or any
    callable with the same contract); ``skip_special_tokens`` is passed through to it.
    """

    def __init__(self, decode: Callable[..., str], skip_special_tokens: bool = True) -> None:
        self._decode = decode
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        # Text of ids[_prefix:_read] has already been emitted; ids[_read:] are pending.
        self._prefix = 0
        self._read = 0

    @property
    def token_ids(self) -> list[int]:
        """Every id fed so far (a copy)."""
        return list(self._ids)

    def _text(self, start: int, stop: int | None = None) -> str:
        return self._decode(self._ids[start:stop], skip_special_tokens=self._skip)

    def push(self, token_id: int | Iterable[int]) -> str:
        """Add one id (or several) and return the text that became complete, possibly ``""``."""
        if isinstance(token_id, int):
            self._ids.append(token_id)
        else:
            self._ids.extend(int(t) for t in token_id)
        prefix_text = self._text(self._prefix, self._read)
        new_text = self._text(self._prefix)
        # A trailing U+FFFD means the last character's bytes are not all here yet: wait for more tokens.
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text):]
        return ""

    def flush(self) -> str:
        """Return whatever is still held back (e.g. a truly invalid byte sequence) and reset the window."""
        prefix_text = self._text(self._prefix, self._read)
        new_text = self._text(self._prefix)
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text):]
