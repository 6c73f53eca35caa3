"""The ftlab command line: prepare a workshop, browse the run cache, predict memory, train from a JSON config."""
