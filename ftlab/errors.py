"""ftlab's own exception types.

Every message names the field (or file and line), the bad value and what to do, so a
learner can fix a config without reading a traceback.
"""
from __future__ import annotations


class FtlabError(Exception):
    """Base class for every error ftlab raises on purpose."""


class ConfigError(FtlabError, ValueError):
    """A RunConfig field has a value outside its allowed range or choices."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"RunConfig.{field}={value!r} is not allowed: {expected}")


class DataError(FtlabError, ValueError):
    """A data file or data source cannot be used (malformed line, missing field...)."""


class ModelNotFoundError(FtlabError, FileNotFoundError):
    """The requested model cannot be found locally or offline."""


class DeviceError(FtlabError, RuntimeError):
    """An option needs hardware this machine does not have (e.g. fp16 without a GPU)."""
