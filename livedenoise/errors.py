"""One error type for everything a user can fix.

Raised at the edges (files, sockets, command-line arguments) with a message that
says what is wrong and what to do; the CLI prints it as one line and exits 2.
"""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 2

    def __str__(self) -> str:
        return " ".join(str(self.args[0]).split()) if self.args else "error"
