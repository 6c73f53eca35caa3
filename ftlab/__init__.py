"""ftlab: a workbook for learning how fine-tuning hyperparameters behave."""
