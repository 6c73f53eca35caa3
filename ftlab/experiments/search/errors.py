"""The error a search raises for an argument that is not a RunConfig field.

A bad RunConfig field or range in a search space is a :class:`ftlab.errors.ConfigError`
like any other; what only a search has (a sampler name, a trial budget too small for its
grid, a storage URL that cannot be opened, a study made for another experiment, the Ray
extra not installed) is a ``SearchError``: an ``FtlabError``, raised before any trial
starts, whose message names the argument or URL and the fix.
"""
from __future__ import annotations

from ftlab.errors import FtlabError


class SearchError(FtlabError, ValueError):
    """A search argument, storage or study that cannot be used as given."""
