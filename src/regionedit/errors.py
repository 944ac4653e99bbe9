"""The one exception type that the library raises for bad input or an unavailable model."""


class RegionEditError(ValueError):
    """A problem the user can fix: a bad argument, an unreadable file, a model not available.

    The message is one line that names the culprit and, where possible, says what to do.
    The CLI prints it as ``regionedit: error: <message>`` and exits with code 2.
    """


class NothingLocated(RegionEditError):
    """A positioning text whose scores reach the threshold nowhere: the edit has no region."""
