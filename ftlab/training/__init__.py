"""Training: train() around Hugging Face Trainer, the one owner of a step's measurement, and scoring by exact match. It never imports a lesson."""
