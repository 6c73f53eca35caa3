"""Runs: the record of one experiment (its declared metrics) and the one cache that knows where records live."""
