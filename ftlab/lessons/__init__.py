"""Lessons: the from-scratch code a chapter shows (schedules, decay steps, NEFTune, Lion, Adafactor, NF4, packing layouts, checkpointing, the LR range test), each checked against its library in a test. The training path never imports these."""
__all__ = ["accumulation", "adafactor", "batch_size", "checkpointing", "halving", "lion", "lora", "lr_finder", "neftune",
           "packing", "quant", "random_search", "schedules", "weight_decay"]
