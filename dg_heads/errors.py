"""One exception type for every mistake a user can make.

The CLI prints a `DGHeadsError` as a single line and exits non-zero, so a bad config or a bad
dataset never ends in a stack trace from deep inside Lightning or a dataloader worker.
"""

from __future__ import annotations


class DGHeadsError(ValueError):
    """A user-facing error: the message names the file, key or value and what was expected."""


def one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it.

    PyTorch re-raises a worker's exception in the main process with the worker's traceback
    folded into the message; its last line holds the original `Type: message`.
    """
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(error).__module__}.{type(error).__name__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last
    return " ".join(text.split("\n"))
