"""The one error type for input a person can fix, shared by every package of the project.

A model config with a bad field, a search space that cannot meet its budget, a missing data set, an
unwritable storage folder: each is a :class:`UserError` (or a subclass), so the command line catches
one type and prints its problems, one line each, with exit code 2 and no traceback. Anything else
that escapes is a programming error and keeps its traceback.
"""

from __future__ import annotations

from typing import Iterable

Problem = tuple[str, str]  # (where: a field or key path, message)


class UserError(ValueError):
    """Input the user can fix. ``problems`` holds ``(where, message)`` pairs (``where`` may be "")."""

    def __init__(self, problems: str | Iterable[Problem]) -> None:
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems: list[Problem] = [(str(w), str(m)) for w, m in problems]
        super().__init__("; ".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem, ``where: message`` (whitespace collapsed)."""
        return [" ".join(f"{w}: {m}".split()) if w else " ".join(m.split()) for w, m in self.problems]

    def summary(self) -> str:
        """The first problem, and how many more there are."""
        lines = self.lines()
        more = f" (+{len(lines) - 1} more problem(s))" if len(lines) > 1 else ""
        return lines[0] + more if lines else type(self).__name__



class ConfigError(UserError):
    """A config that cannot describe a valid model or run; ``problems`` holds (field, message) pairs."""
