"""Training: train() around Hugging Face Trainer, a RunConfig translated into TrainingArguments, the one owner of a step's measurement, diagnosing a diverged run, and scoring by exact match. It never imports a lesson."""
__all__ = ["answers", "arguments", "calibration", "divergence", "evaluate", "heap", "parallel", "step", "train"]
