"""Errors the tool reports to its user, each with where it happened."""

from __future__ import annotations


class DetectorError(Exception):
    """Base class: an error with a message fit for the user, never a traceback."""


class CaptureError(DetectorError):
    """A capture that cannot be read (further). Names the file and the byte offset."""

    def __init__(self, path: str, offset: int | None, message: str):
        self.path = path
        self.offset = offset
        self.message = message
        where = f"{path}" if offset is None else f"{path}: offset {offset}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # travels between processes (distributed analysis) whole
        return CaptureError, (self.path, self.offset, self.message)


class ConfigError(DetectorError):
    """A configuration that cannot be used. Names the file and the key."""

    def __init__(self, message: str, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        parts = [p for p in (path, f"key '{key}'" if key else None) if p]
        super().__init__(": ".join(parts + [message]))


class OutputError(DetectorError):
    """An output that cannot be written (full disk, permissions). Names the file."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


class TelemetryError(DetectorError):
    """A telemetry or allocation file that cannot be used at all (not one bad line: those are
    counted and reported). Names the file and, where there is one, the line."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{path}: line {line}: {message}" if line else f"{path}: {message}")

    def __reduce__(self):
        return TelemetryError, (self.path, self.line, self.message)
