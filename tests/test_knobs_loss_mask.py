"""The two knobs issue 37 adds (adam_epsilon, completion_only_loss): validated, kept out of old
cache keys at their defaults, and wired into what Trainer and the loss really use; the label-mask
lesson checked against ftlab's own data pipeline, for both settings."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ftlab import ConfigError, RunConfig, load_data, load_tokenizer
from ftlab.lessons.label_mask import IGNORE, chat_ids, labels_for, show_mask, tokens_with_gradient
from ftlab.training.arguments import training_arguments, training_optimizer


@pytest.mark.parametrize("field, value, says", [
    ("adam_epsilon", 0, "adam_epsilon"), ("adam_epsilon", -1e-8, "(0, 1e-2]"), ("adam_epsilon", float("nan"), "1e-8"),
    ("adam_epsilon", True, "adam_epsilon"), ("adam_epsilon", 0.5, "(0, 1e-2]"),
    ("completion_only_loss", 1, "True (loss on the answer tokens only"), ("completion_only_loss", "yes", "completion_only_loss"),
])
def test_bad_values_name_the_field_and_the_fix(field, value, says):
    with pytest.raises(ConfigError) as err:
        RunConfig(model="tiny", **{field: value})
    assert field in str(err.value) and says in str(err.value)


@pytest.mark.parametrize("name, field", [("eps", "adam_epsilon"), ("train_on_inputs", "completion_only_loss"),
                                         ("adam_eps", "adam_epsilon"), ("completion_only", "completion_only_loss")])
def test_names_from_elsewhere_point_to_the_field(name, field):
    with pytest.raises(ConfigError, match=field):
        RunConfig(model="tiny", **{name: 1e-6})


def test_defaults_leave_every_cache_key_as_it_was():
    """Fields left at their defaults are not hashed: a run cached before these fields existed is found again."""
    cfg = RunConfig(model="tiny", learning_rate=1e-3)
    same = cfg.replace(adam_epsilon=1e-8, completion_only_loss=True)
    assert same.hash() == cfg.hash()
    assert cfg.replace(adam_epsilon=1e-6).hash() != cfg.hash()
    assert cfg.replace(completion_only_loss=False).hash() != cfg.hash()
    assert RunConfig.from_json(cfg.replace(adam_epsilon=1e-6, completion_only_loss=False).to_json()).adam_epsilon == 1e-6


def test_adam_epsilon_reaches_the_optimizers_param_group(tmp_path):
    model = nn.Linear(3, 2)
    for eps in (1e-8, 1e-6, 1e-3):
        cfg = RunConfig(model="tiny", adam_epsilon=eps)
        assert training_arguments(cfg, str(tmp_path)).adam_epsilon == eps
        assert training_optimizer(cfg, model).param_groups[0]["eps"] == eps


@pytest.fixture(scope="module")
def both(addition_jsonl):
    base = RunConfig(model="tiny-pretrained", dataset=str(addition_jsonl), system_prompt="Add.", lora_r=0,
                     max_seq_length=96, train_size=24, eval_size=8, test_size=8)
    tokenizer = load_tokenizer(base)
    return tokenizer, {s: (base.replace(completion_only_loss=s), load_data(base.replace(completion_only_loss=s), tokenizer))
                       for s in (True, False)}


def test_whole_sequence_loss_labels_every_token_and_evaluation_stays_on_answers(both):
    _, data = both
    answer, whole = data[True][1], data[False][1]
    for a, w in zip(answer.train, whole.train):
        assert a["input_ids"] == w["input_ids"]
        assert w["labels"] == w["input_ids"]  # every token is its own label
        assert sum(t != IGNORE for t in a["labels"]) < sum(t != IGNORE for t in w["labels"])
    assert whole.info["supervised_tokens"] > 3 * answer.info["supervised_tokens"]
    # validation and test rows are scored on the answer tokens under either setting: one scale
    assert list(answer.validation["labels"]) == list(whole.validation["labels"])
    assert list(answer.test_rows["labels"]) == list(whole.test_rows["labels"])
    assert all(row[0] == IGNORE for row in whole.validation["labels"])


@pytest.mark.parametrize("setting", [True, False])
def test_the_lesson_gives_the_pipelines_labels(both, setting):
    tokenizer, data = both
    cfg, loaded = data[setting]
    raw = loaded.raw["train"].select(range(cfg.train_size))
    counted = 0
    for row, example in zip(raw, loaded.train):
        prompt_ids, full_ids = chat_ids(tokenizer, row["prompt"], row["response"], cfg.system_prompt)
        labels = labels_for(prompt_ids, full_ids, completion_only_loss=setting)
        assert full_ids == example["input_ids"] and labels == example["labels"]
        counted += tokens_with_gradient(labels)
    assert counted == loaded.info["supervised_tokens"]
    shown = show_mask(tokenizer, full_ids, labels)
    assert shown.endswith(row["response"] + "<|im_end|>\n")
    assert ("·" in shown) == setting


def test_tokens_with_gradient_skips_the_first_label_which_nothing_predicts():
    assert tokens_with_gradient([5, 6, 7]) == 2
    assert tokens_with_gradient([IGNORE, IGNORE, 7, 8]) == 2
    assert labels_for([1, 2], [1, 2, 3, 4], True) == [IGNORE, IGNORE, 3, 4]
    assert labels_for([1, 2], [1, 2, 3, 4], False) == [1, 2, 3, 4]


def test_whole_sequence_loss_reaches_the_training_loss(both):
    """The loss Trainer computes on a whole-sequence batch includes the prompt's tokens: it differs
    from the answer-only loss of the same rows."""
    from ftlab import load_model

    _, data = both
    cfg, whole = data[False]
    model, _ = load_model(cfg)
    losses = {}
    for setting, (_, loaded) in data.items():
        batch = loaded.collator([loaded.train[i] for i in range(4)])
        with torch.no_grad():
            losses[setting] = float(model(**batch).loss)
    assert losses[True] != pytest.approx(losses[False], rel=1e-3)
