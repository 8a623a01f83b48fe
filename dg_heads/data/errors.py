"""The one exception type for every mistake a user can make, data or not.

It lives here, at the bottom of the import graph, because `dg_heads.data` imports nothing else of
`dg_heads` (imports go one way: the rest of `dg_heads` builds on `dg_heads.data`). `dg_heads.errors`
re-exports it as `DGHeadsError` and turns it into the CLI's single `error:` line.
"""

from __future__ import annotations

from collections import deque


class DGHeadsError(ValueError):
    """A user-facing error: the message names the file, key or value and what was expected.

    `key`: the config key it concerns, where a layer that knows it added it (`keyed`)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.detail, self.key = message, key
        RECENT.append(self)


# The last few user errors made: some jsonargparse versions (4.40) keep only the text of what a
# class's `__init__` raised, chaining the wrapper to another exception; `dg_heads.errors` finds it by it.
RECENT: deque = deque(maxlen=8)
