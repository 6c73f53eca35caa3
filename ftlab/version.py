"""The package version, in a module of its own so that ftlab's modules can record it in a
Run without importing the package that imports them."""
__version__ = "0.1.0"
