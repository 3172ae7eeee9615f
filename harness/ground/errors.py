"""The one exception type the CLI turns into a clear message instead of a traceback."""


class FeynTuneError(RuntimeError):
    """Bad input or a missing prerequisite: the message says what and how to fix it."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run to many lines), or its
    type's name when it has none: what a one-line FeynTuneError quotes of a cause."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
