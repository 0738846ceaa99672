"""StreamDecoder: streamed text equals the full decode, characters are never split."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager_core.io.stream_decoder import StreamDecoder
from eager_core.io.tokenizer import Tokenizer

TEXT = "Emoji 😀👍🏽 👨‍👩‍👧 🇫🇷, accents café naïve Øresund, CJK 日本語 and ascii."


@pytest.fixture(scope="module")
def tok(smollm_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(smollm_dir)


def test_multi_token_characters_are_emitted_whole(tok: Tokenizer) -> None:
    ids = tok.encode(TEXT)
    assert len(ids) > len(TEXT.split())  # emoji and accents really do span several byte tokens
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) + decoder.flush() == TEXT
    assert all("\ufffd" not in p for p in pieces)
    # Each emoji arrives in one piece, once the token holding its last byte is in.
    assert any("😀" in p for p in pieces) and any("👍" in p for p in pieces)
    held = [p for p in pieces if p == ""]
    assert held, "some tokens must be held back until a character completes"


def test_special_tokens_are_skipped_or_kept(tok: Tokenizer) -> None:
    ids = tok.encode("<|im_start|>assistant\nHé!<|im_end|>")
    for skip in (True, False):
        decoder = tok.stream_decoder(skip_special_tokens=skip)
        streamed = "".join(decoder.push(i) for i in ids) + decoder.flush()
        assert streamed == tok.decode(ids, skip_special_tokens=skip)


def test_push_accepts_several_ids_and_flush_releases_incomplete_bytes(tok: Tokenizer) -> None:
    ids = tok.encode("ab😀")
    assert len(ids) == 4  # "ab" then the emoji's bytes in three tokens
    decoder = tok.stream_decoder()
    assert decoder.push(ids[:1]) == "ab"
    assert decoder.push(ids[1:3]) == ""  # two of the emoji's tokens: not a character yet
    assert decoder.flush() == "\ufffd"  # the emoji never completed: flush says so instead of hiding it
    assert decoder.token_ids == ids[:3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 49151), max_size=24))
def test_random_id_streams_concatenate_to_the_full_decode(tok: Tokenizer, ids: list[int]) -> None:
    decoder = StreamDecoder(tok.decode)
    streamed = "".join(decoder.push(i) for i in ids) + decoder.flush()
    assert streamed == tok.decode(ids)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aé 😀日\n👍🏽ß1")), max_size=30))
def test_random_texts_stream_back_exactly(tok: Tokenizer, text: str) -> None:
    decoder = tok.stream_decoder()
    assert "".join(decoder.push(i) for i in tok.encode(text)) + decoder.flush() == text
