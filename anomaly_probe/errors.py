"""User-facing errors.

A :class:`UserError` is anything the user can fix (bad flag, missing file, unavailable weights).
The CLI prints its message on one line and exits with code 2, never with a traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what is wrong and what to do."""

    exit_code = 2
