"""Set-up: what a run needs before its first step: what a model name means (the offline presets, local folders and hub checks, the weights' identity), the model (the one place a model is prepared), the tokenized data, and the pretrained tiny base."""
__all__ = ["data", "models", "presets", "pretrain", "skewed_mix", "sources"]
