"""User-facing errors.

Every problem a user can cause (a bad flag, a missing file, a malformed config) is raised as a
:class:`D4CError` whose message is one sentence naming the flag, file or key and what was
expected. The command line prints that sentence and exits with status 2, never a traceback.
"""


class D4CError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""

    exit_code = 2


class NotAvailableYet(D4CError):
    """A flag whose pipeline stage has not been implemented in this version."""
