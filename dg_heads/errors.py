"""One exception type for every mistake a user can make.

The CLI prints a `DGHeadsError` as a single line and exits non-zero, so a bad config or a bad
dataset never ends in a stack trace from deep inside Lightning or a dataloader worker.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from dg_heads.compat import lightning_owner
from dg_heads.data.errors import RECENT as _RECENT
from dg_heads.data.errors import DGHeadsError  # one class for data and model mistakes

__all__ = ["DGHeadsError", "ConfigError", "keyed", "one_line", "parser_error", "user_error_in", "user_message"]


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


@contextmanager
def keyed(key: str):
    """Prefix a `DGHeadsError` raised inside with the config key (and value) it came from, so a
    message from a library layer (`block 7 does not exist`) names what the user wrote."""
    try:
        yield
    except DGHeadsError as error:
        raise DGHeadsError(error.detail, f"{key}.{error.key}" if error.key else key) from None


def user_error_in(error: BaseException) -> DGHeadsError | None:
    """The `DGHeadsError` behind `error`, however many layers wrapped it (jsonargparse reports a
    class's failed `__init__` as `Does not validate against any of the Union subtypes`, raised
    `from` the original; Lightning and DataLoaders wrap too)."""
    seen = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DGHeadsError):
            return current
        stack += [current.__context__, current.__cause__]
        stack += [e for e in getattr(current, "exceptions", ()) if isinstance(e, BaseException)]
    texts = []
    current = error
    while current is not None and len(texts) < 32:
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    for recent in reversed(_RECENT):  # newest first
        if any(str(recent) in text for text in texts):
            return recent
    return None


class ConfigError(Exception):
    """The command line or a config file does not parse (jsonargparse's error, made one line).
    Not a ValueError: jsonargparse must not catch it and try the next type of a Union."""


# jsonargparse's nested explanation of a failed Union/class_path match: the lines that say nothing
_PARSER_NOISE = re.compile(r"^(- )?(Problem with given class_path|Does not validate|Subtypes:|Errors:|"
                           r"Given value type|Given value:|Expected a <class 'NoneType'>|tip:)")


def parser_error(stderr: str) -> str:
    """jsonargparse's multi-line error as one line: the dotted key, then what was wrong with it
    (`model.optim: Option 'lrr' is not accepted`)."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if start is None:
        return " ".join(line.strip() for line in lines[-3:] if line.strip())
    tail = [line.strip() for line in lines[start:] if line.strip()]
    tail[0] = tail[0][len("error:"):].strip()
    keys = re.findall(r'Parser key "([^"]+)":', "\n".join(tail))
    said = [line for line in tail if not line.startswith("Parser key") and not _PARSER_NOISE.match(line)]
    said += [line.split('":', 1)[1].strip() for line in tail
             if line.startswith("Parser key") and not line.endswith(":")]
    said = [s.lstrip("- ") for s in said if s.strip("- ")]
    given = [line.split(":", 1)[1].strip() for line in tail if line.startswith("Given value:")]
    if given and len(given[0]) <= 100 and not given[0].startswith(("Namespace(", "NestedArg")):
        said.append(f"got {given[0]!r}")  # a plain value; a class's whole config would hide the message
    text = "; ".join(dict.fromkeys(said))
    return f"{'.'.join(keys)}: {text}" if keys else text


def user_message(error: BaseException) -> str | None:
    """The one line to print for `error` if a user mistake is behind it, else None (a bug: let
    its traceback show). A mistake found while jsonargparse built the model or the data arrives
    wrapped; the line then says which (`model.init_args.lora: ...`, `data (DomainBedDataModule): ...`)."""
    if isinstance(error, ConfigError):
        return one_line(error)
    user = user_error_in(error)
    if user is None:
        return None
    if user is error:
        return one_line(user)
    where = lightning_owner(user)  # (the frames' `self`: dg_heads.compat)
    if where is None:
        return one_line(user)
    section, cls = where
    if user.key:
        return one_line(DGHeadsError(user.detail, f"{section}.init_args.{user.key}"))
    return f"{section} ({cls}): {one_line(user)}"
