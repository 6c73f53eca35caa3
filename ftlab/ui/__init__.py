"""Presentation for notebooks: plots of runs (with seed bands) and the ipywidgets built on them."""
