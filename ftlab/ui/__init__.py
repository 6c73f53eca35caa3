"""Presentation for notebooks: plots of runs (with seed bands) and of searches, each knob chapter's takeaway table beside published values, and the ipywidgets built on them."""
__all__ = ["plot", "published", "search_plot", "source", "widgets"]
