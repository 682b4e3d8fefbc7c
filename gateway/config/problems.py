"""What is wrong with a config: one :class:`ConfigProblem` per mistake, all of them in one :class:`ConfigError`.

Its own module because every other part of the package (the schema's cross-check, the checks, the
messages, the loader) produces problems, and none of them may import the loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class ConfigProblem(NamedTuple):
    """One thing wrong with the config, where ``path`` is the key path (``users[0].stations[1]``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem], source: str = "<string>") -> None:
        self.problems: list[ConfigProblem] = list(problems)
        self.source = source
        super().__init__("\n".join(str(p) for p in self.problems))
