"""The one exception family of archsearch; the CLI turns each into a single line and exit code 2."""

from __future__ import annotations


class ArchsearchError(Exception):
    """Base of every error archsearch raises on purpose (bad input, impossible requests)."""


class ConfigError(ArchsearchError):
    """A config file (study, proxy settings, architecture) that is malformed: names the file, the line and the key."""

    def __init__(self, file: str, line: int | None, key: str, message: str) -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SpaceError(ConfigError):
    """A search space that is malformed or cannot hold a feasible architecture."""


class ConstraintViolation(ArchsearchError):
    """A concrete architecture breaks a rule of its block families or a constraint of its space."""
