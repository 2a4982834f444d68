"""The project's exceptions: each carries a message written for the person at the keyboard."""


class DualrecError(Exception):
    """Base of every error DUALRec reports to a user (the CLI and the app print its message, no traceback)."""


class DataError(DualrecError):
    """The MovieLens files are missing, malformed or do not match their checksum."""


class UnknownUserError(DualrecError):
    """A user id that is not in users.dat, or has no history to work with."""


class UnknownTitleError(DualrecError):
    """A title that cannot be found in the MovieLens catalogue."""


class ConfigError(DualrecError):
    """An option outside the values it accepts; the message names the option (its flag) and what it accepts."""
