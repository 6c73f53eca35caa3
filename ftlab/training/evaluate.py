"""Scoring a model the way a user would: greedy answers to held-out questions, exact match.

Eval loss says how surprised the model is by the reference answer; exact match says
whether it actually writes it. Both are reported because they can disagree (a model can
lower its loss by being less wrong while still never getting a number right).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftlab.training.answers import exact_match
from ftlab.setup.data import chat_messages


@torch.no_grad()
def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                     system_prompt: str, max_new_tokens: int = 16, batch_size: int = 16) -> list[str]:
    """Greedy answers, batched with left padding (the answer must start right after the prompt)."""
    was_training = model.training
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    device = next(model.parameters()).device
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template(chat_messages(p, system_prompt), add_generation_prompt=True,
                                                   tokenize=False) for p in prompts[start:start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [a.strip() for a in answers]


def score_exact_match(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[dict[str, Any]],
                      system_prompt: str, max_new_tokens: int = 16) -> tuple[float, list[dict[str, Any]]]:
    """(exact-match rate, per-example samples) on held-out examples with prompt/response."""
    if not examples:
        return float("nan"), []
    answers = generate_answers(model, tokenizer, [e["prompt"] for e in examples], system_prompt, max_new_tokens)
    samples = [{"prompt": e["prompt"], "reference": e["response"], "answer": a, "task": e.get("task", ""),
                "correct": exact_match(a, e["response"])} for e, a in zip(examples, answers)]
    return sum(s["correct"] for s in samples) / len(samples), samples
