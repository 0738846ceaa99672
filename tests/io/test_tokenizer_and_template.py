"""Tokenizer loading errors, BOS/EOS handling, and chat-template rendering (features and failures)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import transformers

from eager_core.errors import CheckpointError, RequestError
from eager_core.io.gguf import convert_gguf
from eager_core.io.tokenizer import Tokenizer

FEATURES = (  # tojson (unescaped, non-ASCII kept), namespace, loop controls, bos/eos variables, extra kwargs
    "{{ bos_token }}{% set ns = namespace(n=0) %}"
    "{% for m in messages %}{% if m['role'] == 'skip' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}"
    "[{{ m['role'] | upper }}] {{ m['content'] | tojson }} {{ m | tojson(sort_keys=True) }}\n"
    "  {% if loop.last %}last{% endif %}\n{% endfor %}"
    "{{ ns.n }} {{ eos_token }} {{ dict(a=1) | tojson }} {{ tools | tojson }} {{ custom_flag }}"
    "{% if add_generation_prompt %}<gen>{% endif %}"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_gguf import write_tiny_gguf

    folder = tmp_path_factory.mktemp("tok")
    write_tiny_gguf(folder / "tiny.gguf")
    return convert_gguf(folder / "tiny.gguf", folder / "ckpt")


@pytest.fixture
def copy(ckpt: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ckpt, tmp_path / "ckpt", ignore=shutil.ignore_patterns("model.safetensors")))


def _set_config(folder: Path, **changes) -> None:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_chat_template_features_render_like_transformers(ckpt: Path) -> None:
    ours, theirs = Tokenizer.from_dir(ckpt), transformers.AutoTokenizer.from_pretrained(str(ckpt))
    messages = [{"role": "system", "content": "Say <b>\"hi\"</b> & café"}, {"role": "skip", "content": "x"},
                {"role": "user", "content": "✓ ok", "name": None}]
    for gen in (True, False):
        expected = theirs.apply_chat_template(messages, chat_template=FEATURES, tokenize=False,
                                              add_generation_prompt=gen, custom_flag="on")
        assert ours.apply_chat_template(messages, add_generation_prompt=gen, chat_template=FEATURES,
                                        custom_flag="on") == expected
    assert '"Say <b>\\"hi\\"</b> & café"' in expected  # tojson neither HTML-escapes nor ASCII-escapes


def test_strftime_now_is_available(ckpt: Path) -> None:
    rendered = Tokenizer.from_dir(ckpt).apply_chat_template(
        [{"role": "user", "content": "x"}], chat_template="{{ strftime_now('%Y') }}")
    assert rendered.isdigit() and len(rendered) == 4


def test_template_calling_raise_exception_is_a_request_error(ckpt: Path) -> None:
    template = ("{% if messages[0]['role'] != 'system' %}"
                "{{ raise_exception('first message must be system') }}{% endif %}")
    with pytest.raises(RequestError, match="first message must be system"):
        Tokenizer.from_dir(ckpt).apply_chat_template([{"role": "user", "content": "x"}], chat_template=template)


def test_template_failing_on_the_messages_is_a_request_error(ckpt: Path) -> None:
    # The default ChatML template concatenates content as a string; a list of parts breaks it.
    with pytest.raises(RequestError, match="chat template failed to render"):
        Tokenizer.from_dir(ckpt).apply_chat_template([{"role": "user", "content": [{"type": "text"}]}])


def test_template_with_a_syntax_error(copy: Path) -> None:
    _set_config(copy, chat_template="{% for m in messages %}{{ m['content'] }")
    with pytest.raises(CheckpointError, match="syntax error"):
        Tokenizer.from_dir(copy).apply_chat_template([{"role": "user", "content": "x"}])


def test_sandbox_blocks_attribute_escapes(ckpt: Path) -> None:
    template = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(RequestError):
        Tokenizer.from_dir(ckpt).apply_chat_template([{"role": "user", "content": "x"}], chat_template=template)


def test_bad_messages_are_request_errors(ckpt: Path) -> None:
    tok = Tokenizer.from_dir(ckpt)
    with pytest.raises(RequestError, match="non-empty list"):
        tok.apply_chat_template([])
    with pytest.raises(RequestError, match=r"messages\[1\] must be a dict"):
        tok.apply_chat_template([{"role": "user", "content": "x"}, "hello"])


def test_no_chat_template(copy: Path) -> None:
    config = json.loads((copy / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="has no chat_template"):
        Tokenizer.from_dir(copy).apply_chat_template([{"role": "user", "content": "x"}])


def test_missing_tokenizer_json(copy: Path) -> None:
    (copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is missing"):
        Tokenizer.from_dir(copy)


def test_broken_tokenizer_json(copy: Path) -> None:
    (copy / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: cannot load tokenizer"):
        Tokenizer.from_dir(copy)


def test_broken_tokenizer_config(copy: Path) -> None:
    (copy / "tokenizer_config.json").write_text("{'single': 'quotes'}")
    with pytest.raises(CheckpointError, match=r"tokenizer_config\.json: malformed JSON"):
        Tokenizer.from_dir(copy)


def test_missing_folder_for_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        Tokenizer.from_dir(tmp_path / "absent")


def test_bos_comes_from_the_tokenizer_json_post_processor(tmp_path: Path) -> None:
    from tiny_gguf import write_tiny_gguf

    write_tiny_gguf(tmp_path / "spm.gguf", tokenizer="llama")  # sentencepiece: BOS by default
    folder = convert_gguf(tmp_path / "spm.gguf", tmp_path / "ckpt")
    ours, theirs = Tokenizer.from_dir(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    ids = ours.encode("the and", add_special_tokens=True)
    assert ids == theirs.encode("the and", add_special_tokens=True) and ids[0] == ours.bos_token_id == 1
    assert ours.encode("the and") == ids[1:]


def test_config_flags_do_not_override_tokenizer_json(copy: Path) -> None:
    # transformers 5 keeps tokenizer.json's post-processor whatever tokenizer_config.json says; so do we.
    _set_config(copy, add_bos_token=True, add_eos_token=True)
    ours, theirs = Tokenizer.from_dir(copy), transformers.AutoTokenizer.from_pretrained(str(copy))
    assert ours.encode("the and", add_special_tokens=True) == theirs.encode("the and", add_special_tokens=True) \
        == ours.encode("the and")


def test_eos_ids_fall_back_from_generation_config_to_config(copy: Path) -> None:
    assert Tokenizer.from_dir(copy).eos_token_ids == [2, 0]
    (copy / "generation_config.json").unlink()
    assert Tokenizer.from_dir(copy).eos_token_ids == [2]  # config.json's eos_token_id
    config = json.loads((copy / "config.json").read_text())
    del config["eos_token_id"]
    (copy / "config.json").write_text(json.dumps(config))
    assert Tokenizer.from_dir(copy).eos_token_ids == [2]  # tokenizer_config's eos_token "<|im_end|>"


def test_clean_up_tokenization_spaces_matches_transformers(copy: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    text = "Hello , world . Is n't it ?"
    # BPE: transformers ignores the flag (the clean-up would delete real spaces), and so do we.
    _set_config(copy, clean_up_tokenization_spaces=True)
    ours, theirs = Tokenizer.from_dir(copy), transformers.AutoTokenizer.from_pretrained(str(copy))
    ids = ours.encode(text)
    assert ours.decode(ids) == theirs.decode(ids) == text
    # WordPiece: the clean-up applies.
    words = ["[UNK]", "hello", ",", "world", ".", "is", "n't", "it", "?"]
    backend = Backend(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    folder = tmp_path / "wordpiece"
    folder.mkdir()
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "clean_up_tokenization_spaces": True}))
    ours, theirs = Tokenizer.from_dir(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    ids = ours.encode("hello , world . is n't it ?")
    assert ours.decode(ids) == theirs.decode(ids) == "hello, world. isn't it?"
