"""Runs: the record of one experiment (its declared metrics) and the one cache that knows where records live, and runs read into numbers and tables."""
__all__ = ["cache", "record", "table"]
