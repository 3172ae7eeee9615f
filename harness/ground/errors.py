"""The one exception type the CLI turns into a clear message instead of a traceback."""


class FeynTuneError(RuntimeError):
    """Bad input or a missing prerequisite: the message says what and how to fix it."""
