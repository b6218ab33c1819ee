"""The one exception type users see: a message that says what was wrong, where, and what to do."""


class GenzooError(Exception):
    """Bad input or state that the user can fix. The CLI prints it without a traceback."""
