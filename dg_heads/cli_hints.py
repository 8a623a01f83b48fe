"""Help for a mistyped command line or config, added to jsonargparse's one-line error: the file of
a YAML syntax error, the nearest option to an unknown one (jsonargparse suggests none; `difflib`),
and short class names for `--model.help` / `--data.help`."""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import yaml

from dg_heads import compat

# the sections chosen by class_path, and the classes they may name (short names for `--X.help`)
SECTIONS = {"model": ("dg_heads.methods", ("CLIPBaseline", "HeadPurification", "AttentionAblation")),
            "data": ("dg_heads.data", ("DomainBedDataModule",))}


def _classes(section: str) -> list[type]:
    import importlib

    module, names = SECTIONS[section]
    loaded = importlib.import_module(module)
    return [getattr(loaded, name) for name in names]


def expand_help(argv: list[str]) -> list[str]:
    """`--model.help HeadPurification` -> `--model.help dg_heads.methods.HeadPurification`: a
    class of the section named without its module (jsonargparse wants the import path)."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        section = arg[2:-len(".help")] if arg.startswith("--") and arg.endswith(".help") else None
        if section in SECTIONS and "." not in out[i + 1]:
            module, names = SECTIONS[section]
            match = [n for n in names if n.lower() == out[i + 1].lower()]
            if match:
                out[i + 1] = f"{module}.{match[0]}"
    return out


def _options_of(annotation) -> dict | None:
    """A dataclass's (or an Optional one's) fields, each with its own nested options."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if is_dataclass(candidate) and isinstance(candidate, type):
            hints = typing.get_type_hints(candidate)
            return {f.name: _options_of(hints.get(f.name)) for f in fields(candidate)}
    return None


def section_options(section: str) -> dict:
    """The init arguments of every class a section may name, nested (`optim` -> `lr`, ...)."""
    tree: dict = {}
    for cls in _classes(section):
        for klass in cls.__mro__:
            if "__init__" not in vars(klass):
                continue
            try:
                hints = typing.get_type_hints(klass.__init__)
            except Exception:  # noqa: BLE001 - a base we cannot introspect (LightningModule's)
                continue
            for name in inspect.signature(klass.__init__).parameters:
                if name not in ("self", "args", "kwargs") and klass.__module__.startswith("dg_heads"):
                    tree.setdefault(name, _options_of(hints.get(name)))
    return tree


def _nearest(word: str, candidates) -> str | None:
    found = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def suggest(message: str, parser) -> str:
    """`message` plus `; did you mean ...?` when it names an unknown option close to a known one."""
    try:
        return message + (_suggestion(message, parser) or "")
    except Exception:  # noqa: BLE001 - a hint must never hide the error itself
        return message


def _suggestion(message: str, parser) -> str | None:
    # jsonargparse's words vary across the supported range (4.40: `Unrecognized arguments`,
    # `Validation failed: Key 'x' is not expected`)
    accepted = (re.match(r"(?:([\w.]+): )?Option '([\w.]+)' is not accepted", message)
                or re.match(r"(?:([\w.]+): )?Validation failed: Key '([\w.]+)' is not expected", message))
    unknown = re.match(r"(?:([\w.]+): )?unrecognized arguments: --([\w.]+)", message, re.IGNORECASE)
    if accepted or unknown:
        prefix, key = (accepted or unknown).groups()
    else:
        return None
    path = [p for p in f"{prefix}.{key}".split(".") if p != "init_args"] if prefix else key.split(".")
    if path[0] in SECTIONS:
        node, known = section_options(path[0]), [path[0]]
        for depth, part in enumerate(path[1:], start=1):
            if node is None:
                return None
            if part not in node:
                near = difflib.get_close_matches(part, sorted(node), n=2, cutoff=0.6)
                rest = path[depth + 1:]
                keys = [f"--{'.'.join([known[0], 'init_args', *known[1:], n, *rest])}" for n in near]
                return f"; did you mean {' or '.join(keys)}?" if keys else None
            known.append(part)
            node = node[part]
        return None
    near = _nearest(key, {o[2:] for o in compat.option_strings(parser) if o.startswith("--")})
    return f"; did you mean --{near}?" if near else None


def name_yaml_file(message: str, argv: list[str]) -> str:
    """A YAML syntax error from jsonargparse says `in "<unicode string>", line 6`: name the file."""
    if "<unicode string>" not in message:
        return message
    configs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    configs += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for config in configs:
        try:
            yaml.safe_load(Path(config).read_text())
        except yaml.YAMLError:
            return message.replace('"<unicode string>"', str(config))
        except OSError:
            continue
    return message
