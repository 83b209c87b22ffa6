"""The character tokenizer: fixed vocabulary, lossless round trips, the real loading path."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from dataflywheel.training.tokenizer import (
    BOS,
    CHARACTERS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    VOCAB,
    build_char_tokenizer,
    save_char_tokenizer,
    vocab_size,
)

ARITHMETIC = ["0+0=0", "12+34=46", "987654321+1=987654322", "7-9=-2", "Answer: 42\n", " 3 * 4 "]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_char_tokenizer(tmp_path_factory.mktemp("tok") / "char", max_length=48)


def test_vocabulary_is_fixed() -> None:
    assert VOCAB[:4] == (PAD, BOS, EOS, UNK)
    assert vocab_size() == len(VOCAB) == 4 + 10 + 26 + 26 + 32 + 2 == 100
    tok = build_char_tokenizer()
    assert tok.get_vocab() == {t: i for i, t in enumerate(VOCAB)}
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    # Same ids on every build: digits first after the specials.
    assert tok.convert_tokens_to_ids(list("0129")) == [4, 5, 6, 13]


@pytest.mark.parametrize("text", ARITHMETIC)
def test_round_trip_one_token_per_character(text: str) -> None:
    tok = build_char_tokenizer()
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert len(ids) == len(text) + 1
    assert tok.convert_ids_to_tokens(ids[1:]) == list(text)
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids) == BOS + text


def test_every_character_round_trips() -> None:
    tok = build_char_tokenizer()
    ids = tok(CHARACTERS, add_special_tokens=False)["input_ids"]
    assert ids == list(range(4, 100))
    assert tok.decode(ids) == CHARACTERS


def test_special_tokens_and_unknown_characters() -> None:
    tok = build_char_tokenizer()
    ids = tok("1+1=2" + EOS)["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "1+1=2"
    # Outside the vocabulary: <unk>, which decode cannot give back.
    ids = tok("5é\t6", add_special_tokens=False)["input_ids"]
    assert ids == [9, 3, 3, 10]
    assert tok.decode(ids, skip_special_tokens=True) == "56"
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)


def test_save_and_reload_with_auto_tokenizer(saved: Path) -> None:
    reloaded = AutoTokenizer.from_pretrained(saved)
    fresh = build_char_tokenizer()
    assert reloaded.get_vocab() == fresh.get_vocab()
    assert reloaded.model_max_length == 48
    for text in ARITHMETIC:
        assert reloaded(text)["input_ids"] == fresh(text)["input_ids"]
        assert reloaded.decode(reloaded(text)["input_ids"], skip_special_tokens=True) == text
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token) == (BOS, EOS, PAD)


def test_batch_left_padding(saved: Path) -> None:
    tok = AutoTokenizer.from_pretrained(saved)
    enc = tok(["1+1=", "12+13="], padding=True, padding_side="left")
    assert enc["input_ids"][0][:2] == [tok.pad_token_id] * 2
    assert enc["attention_mask"][0] == [0, 0, 1, 1, 1, 1, 1]


def test_chat_template(saved: Path) -> None:
    tok = AutoTokenizer.from_pretrained(saved)
    chat = [{"role": "user", "content": "2+3="}]
    prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt == BOS + "user: 2+3=\nassistant: "
    full = tok.apply_chat_template([*chat, {"role": "assistant", "content": "5"}], tokenize=False)
    assert full == BOS + "user: 2+3=\nassistant: 5" + EOS + "\n"
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1  # the template's <bos>, not a second one
    assert tok.decode(ids) == prompt
