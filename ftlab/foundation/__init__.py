"""Foundation: what every layer above may use: the cache folder and atomic writes, and how ftlab behaves inside a Jupyter kernel (``import ftlab`` sets that up). Imports nothing else of ftlab but its errors."""
__all__ = ["jupyter", "storage"]
