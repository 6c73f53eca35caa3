"""The label mask, written out: which tokens of a chat example carry loss.

A causal LM is trained to predict every next token. ``labels`` says which predictions count:
a position whose label is ``-100`` is skipped by the cross-entropy (PyTorch's
``ignore_index``), so it sends no gradient. Fine-tuning on question/answer pairs offers two
choices, named as in TRL's ``SFTConfig``:

* ``completion_only_loss=True`` (ftlab's default): every token of the prompt (system turn,
  question, the ``<|im_start|>assistant`` header) gets ``-100``; only the answer and its closing
  ``<|im_end|>`` are learned. The model learns to *answer*, not to write questions.
* ``completion_only_loss=False``: every token is its own label, the whole conversation is
  learned. Most of the gradient then goes to text the model will be *given* at inference (the
  finance prompts are 5-10x longer than their answers).

The model shifts the labels itself (position ``i`` predicts token ``i + 1``), so a row's first
label is never scored: nothing comes before it. :func:`tokens_with_gradient` counts accordingly.

:func:`labels_for` is what ``ftlab.setup.data.encode_example`` does for every training example
(a test checks the two agree on the real pipeline's rows, for both settings).
"""
from __future__ import annotations

from typing import Sequence

from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE", "chat_ids", "labels_for", "tokens_with_gradient", "show_mask"]

IGNORE = -100
"""The label cross-entropy skips (``torch.nn.CrossEntropyLoss(ignore_index=-100)``)."""


def chat_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, system_prompt: str
             ) -> tuple[list[int], list[int]]:
    """(prompt ids, full ids): the conversation up to the assistant header, and with the answer.

    The prompt is a prefix of the full conversation: that is what lets its tokens be masked."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    assert full_ids[:len(prompt_ids)] == prompt_ids, "the template must render the prompt as a prefix"
    return prompt_ids, full_ids


def labels_for(prompt_ids: Sequence[int], full_ids: Sequence[int], completion_only_loss: bool = True) -> list[int]:
    """The labels of one example: the prompt masked (``-100``) or not, the rest copied."""
    masked = len(prompt_ids) if completion_only_loss else 0
    return [IGNORE] * masked + list(full_ids[masked:])


def tokens_with_gradient(labels: Sequence[int]) -> int:
    """How many predictions of this row are scored: labels that are not ``-100``, after the first."""
    return sum(1 for label in labels[1:] if label != IGNORE)


def show_mask(tokenizer: PreTrainedTokenizerBase, full_ids: Sequence[int], labels: Sequence[int],
              hidden: str = "·") -> str:
    """The example as text with every masked token drawn as ``hidden``: what the loss sees."""
    return "".join(tokenizer.decode([t]) if label != IGNORE else hidden for t, label in zip(full_ids, labels))
