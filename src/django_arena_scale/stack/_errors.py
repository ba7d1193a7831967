"""The one error type of the stack runner: a message that names the cause."""

from __future__ import annotations


class StackError(RuntimeError):
    """The stack cannot start or act: the message names what and why, ending with a full stop."""
