"""Bad input ends a command with one line on stderr and exit code 2 (no traceback)."""

from __future__ import annotations

import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Input the user can fix (an unknown space, an infeasible budget, unwritable storage, ...).

    The message is printed as a single line prefixed with the program name; nothing else is shown.
    """

    def one_line(self) -> str:
        return " ".join(str(self).split())


def report_user_error(prog: str, err: UserError) -> int:
    """Print ``prog: message`` on stderr and return the exit code for bad input."""
    print(f"{prog}: error: {err.one_line()}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR
