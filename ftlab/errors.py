"""ftlab's own exception types.

Every message names the place (a config field, a function's argument, a file and line), the
bad value and what to do, so a learner can fix a config or a call without reading a traceback.
Every type derives from :class:`FtlabError`, and each is raised before any training starts:
a bad input never costs a run, a run's history or a cache entry.
"""
from __future__ import annotations


class FtlabError(Exception):
    """Base class for every error ftlab raises on purpose."""


class ConfigError(FtlabError, ValueError):
    """A RunConfig field (or an environment variable ftlab reads) has a value outside its
    allowed range or choices."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        where = field if field.isupper() else f"RunConfig.{field}"  # FTLAB_PROFILE is a variable, not a field
        super().__init__(f"{where}={value!r} is not allowed: {expected}")


class ArgumentError(FtlabError, ValueError):
    """A function's argument has a value outside its allowed range or choices.

    Kept apart from :class:`ConfigError` because its message names the function and the
    argument the learner passed: "RunConfig.rule=..." sent a learner looking for a config
    field that does not exist, when the fix is in the call they just wrote.
    """

    def __init__(self, function: str, argument: str, value: object, expected: str) -> None:
        self.function = function
        self.argument = argument
        self.value = value
        super().__init__(f"{function}({argument}={value!r}) is not allowed: {expected}")


class ConfigFileError(FtlabError, ValueError):
    """A config given as JSON text or a file cannot be read (not JSON, not an object)."""


class DataError(FtlabError, ValueError):
    """A data file or data source cannot be used (malformed line, missing field...)."""


class ModelNotFoundError(FtlabError, FileNotFoundError):
    """The requested model cannot be found locally or offline."""


class ModelError(FtlabError, ValueError):
    """A model exists but cannot be used as configured: pickle-only weights, remote code,
    a broken config.json, or LoRA target modules it does not have."""


class DeviceError(FtlabError, RuntimeError):
    """An option needs hardware this machine does not have (e.g. fp16 without a GPU)."""


class CacheError(FtlabError, OSError):
    """ftlab's cache folder or a file in it cannot be used (FTLAB_CACHE is a file, a saved
    run is unreadable)."""
