"""Configuration: RunConfig (every knob of one experiment, validated when made), the optimizer table, and the workload profiles. Nothing here loads a model or reads data."""
__all__ = ["formats", "optimizers", "precision", "profiles", "run_config"]
