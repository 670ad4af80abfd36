"""User-facing errors.

Every problem a user can cause (a bad flag, a missing file, a malformed config) is raised as a
:class:`D4CError` whose message is one sentence naming the input, file or key and what was
expected. The command line prints that sentence and exits with status 2, never a traceback.

Library code does not know the command line. An error about one argument names it by its
*parameter name* (``gen_iter``, ``q_config``, ``prompts``) and leads the sentence with it;
the CLI (:func:`d4c.cli.describe_error`) shows that name as its flag (``--gen_iter``,
``--custom_file``), so the same error reads naturally in Python and on the command line.
"""

from __future__ import annotations

from typing import Callable


class D4CError(Exception):
    """A problem with the user's input or environment, explained in one sentence.

    Args:
        message: the sentence; with ``parameter``, the rest of the sentence after the name.
        parameter: the argument at fault, by its library name; it leads the sentence.
    """

    exit_code = 2

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter

    def describe(self, name_of: Callable[[str], str] = str) -> str:
        """The sentence, with the parameter shown as ``name_of(parameter)`` (the CLI passes its flag lookup)."""
        if self.parameter is None:
            return self.message
        return f"{name_of(self.parameter)} {self.message}"

    def __str__(self) -> str:
        return self.describe()
