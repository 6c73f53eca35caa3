"""Set-up: what a run needs before its first step: the model (the one place a model is prepared), the tokenized data, and the pretrained tiny base."""
