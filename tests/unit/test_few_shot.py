"""Few-shot exemplars: spec validation, rendering (chat turns or text prefix), and which
stages see them (generation always, training only with ``in_training``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dataflywheel.generation.prompt_format import PromptFormat
from dataflywheel.prompts.arithmetic import Problem, split_of
from dataflywheel.rounds import plan
from dataflywheel.spec import RunSpec, format_errors, load_spec
from dataflywheel.training.tokenizer import build_char_tokenizer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHOTS = [{"prompt": "1+2=", "completion": "3"}, {"prompt": "4+4=", "completion": "8"}]


def _spec(few_shot: Any, chat_template: bool = False) -> RunSpec:
    return RunSpec.model_validate(
        {
            "model": {"source": "builtin:tiny-llama"},
            "prompts": {"kind": "builtin", "family": "addition"},
            "generation": {
                "backend": "transformers",
                "max_tokens": 8,
                "chat_template": chat_template,
                "few_shot": few_shot,
            },
        }
    )


def _errors(few_shot: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        _spec(few_shot)
    return format_errors(info.value)


@pytest.mark.parametrize(
    ("few_shot", "needle"),
    [
        ({"examples": []}, "generation.few_shot.examples"),
        ({"examples": [{"prompt": "1+2="}]}, "completion"),
        ({"examples": [{"prompt": "  ", "completion": "3"}]}, "only whitespace"),
        ({"examples": [{"prompt": "1+2=", "completion": ""}]}, "completion"),
        ({"examples": SHOTS + SHOTS[:1]}, "each exemplar prompt may appear once"),
        ({"examples": SHOTS, "shots": 2}, "shots"),
        ({"examples": SHOTS, "separator": ""}, "separator"),
        ({"examples": [{"prompt": f"{i}+0=", "completion": str(i)} for i in range(17)]}, "16"),
    ],
)
def test_bad_few_shot_is_refused_naming_the_field(few_shot: Any, needle: str) -> None:
    lines = _errors(few_shot)
    assert any("few_shot" in line for line in lines), lines
    assert any(needle in line for line in lines), lines


def test_few_shot_defaults_train_on_bare_prompts() -> None:
    spec = _spec({"examples": SHOTS})
    assert spec.generation.few_shot is not None
    assert spec.generation.few_shot.in_training is False
    assert spec.generation.few_shot.separator == "\n\n"
    assert _spec(None).generation.few_shot is None


def test_text_prefix_joins_shots_like_the_trainer_joins_prompt_and_completion() -> None:
    fmt = PromptFormat(shots=(("1+2=", "3"), ("4+4=", "8")), separator="\n")
    assert fmt.render(["5+1="]) == ["1+2=3\n4+4=8\n5+1="]
    assert PromptFormat().render(["5+1="]) == ["5+1="]
    assert PromptFormat().is_identity and not fmt.is_identity


def test_chat_template_renders_shots_as_earlier_turns() -> None:
    tok = build_char_tokenizer()
    fmt = PromptFormat(chat_template=True, shots=(("1+2=", "3"),))
    [text] = fmt.render(["5+1="], tok)
    expected = tok.apply_chat_template(
        [
            {"role": "user", "content": "1+2="},
            {"role": "assistant", "content": "3"},
            {"role": "user", "content": "5+1="},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    # The char tokenizer adds BOS itself, so the template's BOS is not written twice.
    assert expected.startswith(tok.bos_token)
    assert text == expected[len(tok.bos_token) :]
    assert text.index("1+2=") < text.index("3") < text.index("5+1=")
    [bare] = PromptFormat(chat_template=True).render(["5+1="], tok)
    assert bare.endswith(text[-len(bare) :]) and len(bare) < len(text)


def test_chat_template_needs_a_tokenizer_with_one() -> None:
    fmt = PromptFormat(chat_template=True)
    with pytest.raises(ValueError, match="tokenizer"):
        fmt.render(["x"])
    tok = build_char_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat_template: false"):
        fmt.render(["x"], tok)


def test_describe_identifies_the_shots() -> None:
    a = PromptFormat(chat_template=True, shots=(("1+2=", "3"),)).describe()
    b = PromptFormat(chat_template=True, shots=(("1+2=", "4"),)).describe()
    assert a["shots"] == 1 and a["chat_template"] is True and a["separator"] is None
    assert a["shots_digest"] != b["shots_digest"]
    assert PromptFormat().describe()["shots_digest"] is None


@pytest.mark.parametrize("in_training", [False, True])
def test_generation_always_sees_shots_training_only_when_asked(in_training: bool) -> None:
    spec = _spec({"examples": SHOTS, "in_training": in_training}, chat_template=True)
    generate, train = plan.prompt_format(spec, "generate"), plan.prompt_format(spec, "train")
    assert generate.shots == (("1+2=", "3"), ("4+4=", "8")) and generate.chat_template
    assert train.chat_template  # training always uses the generation template
    assert train.shots == (generate.shots if in_training else ())
    with pytest.raises(ValueError, match="use"):
        plan.prompt_format(spec, "eval")


def test_without_few_shot_or_template_prompts_are_fed_as_they_are() -> None:
    spec = _spec(None)
    assert plan.prompt_format(spec, "generate").is_identity
    assert plan.prompt_format(spec, "train").is_identity


def test_smollm2_example_shows_two_exemplars_and_trains_bare() -> None:
    spec = load_spec(EXAMPLES / "smollm2-star.yaml")
    few = spec.generation.few_shot
    assert few is not None and len(few.examples) == 2 and not few.in_training
    for shot in few.examples:
        assert shot.completion.splitlines()[-1].startswith("Answer: ")
    # The exemplars' facts lie in the train split: they never show a held-out problem.
    facts = [Problem("+", 23, 14), Problem("-", 72, 45)]
    for shot, fact in zip(few.examples, facts, strict=True):
        assert f"{fact.a} {fact.op} {fact.b} = {fact.result}" in shot.completion
        assert split_of(fact) == "train"


def test_trainer_renders_bare_rows_exactly_as_the_generator_does() -> None:
    from dataflywheel.training.sft import render_prompts

    tok = build_char_tokenizer()
    spec = _spec({"examples": SHOTS}, chat_template=True)
    train = plan.prompt_format(spec, "train")
    [row] = render_prompts(["5+1="], train, tok)
    # What the generator feeds for the same prompt minus the exemplars: same template text.
    assert row == PromptFormat(chat_template=True).render(["5+1="], tok)[0]
    assert "1+2=" not in row  # in_training: false keeps the shots out of SFT rows
    assert render_prompts(["5+1="], None, tok) == ["5+1="]
    assert render_prompts(["5+1="], PromptFormat(), tok) == ["5+1="]
