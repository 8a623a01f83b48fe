"""The `lightning` / `dg-heads` / `python -m dg_heads` command.

Lightning's subcommands (`fit`, `validate`, `test`, `predict`) go to `DGHeadsCLI`
(`dg_heads.lightning_cli`); the others are small programs of their own, each a typed function
that jsonargparse's `CLI` runs (`run_tool`: options, `--help` and type checks from its signature
and docstring, as LightningCLI derives the subcommands' from the classes). Lightning is imported
only where a tool needs it. A user mistake prints one `error:` line and exits with 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import sys
import types
import typing

from dg_heads import environment
from dg_heads.collective_failure import collective_failure_message, is_collective_failure
from dg_heads.errors import ConfigError, DGHeadsError, parser_error, user_message

# Lightning's subcommands, with their one line for `--help`
LIGHTNING = {
    "fit": "train a method (--test_after_fit true: then test the checkpoint selected by val/acc)",
    "validate": "score the source domains' `out` splits (training-domain validation)",
    "test": "score the held-out test domains",
    "predict": "predict the held-out domains' images into predictions.csv in the run folder",
}
# subcommand -> ("module:function" that runs it on the remaining arguments, its one line)
TOOLS = {
    "sweep": ("dg_heads.sweep:main",
              "a sweep spec to jobs: print the sbatch line, run them here (--launcher local) or submit"),
    "collect": ("dg_heads.collect:main",
                "DomainBed tables (both selections) of sweep jobs or runs (.md, .tex, .csv, .png); --compare PAPER"),
    "prepare": ("dg_heads.data_cli:prepare_main", "fetch if possible and verify a dataset's copy (DG or caption data)"),
    "splits": ("dg_heads.data_cli:splits_main", "print a dataset's DomainBed in/out splits as JSON"),
    "export": ("dg_heads.export_cli:main", "a checkpoint to a plain open_clip weights file"),
    "atlas": ("dg_heads.atlas.cli:main", "every head of a model on one HTML page: TextSpan, AAT, HAP measures"),
    "weights": ("dg_heads.weights:main", "fetch open_clip's pretrained weights MODEL TAG into the cache (login node)"),
}


def usage() -> str:
    """What `dg-heads --help` prints: every subcommand with one line."""
    width = max(map(len, [*LIGHTNING, *TOOLS]))
    lines = ["usage: dg-heads SUBCOMMAND [options]   (also `lightning` and `python -m dg_heads`)", "",
             "Lightning subcommands (options: a YAML --config, any key as --key value):"]
    lines += [f"  {name:<{width}}  {line}" for name, line in LIGHTNING.items()]
    lines += ["", "dg-heads tools:"]
    lines += [f"  {name:<{width}}  {line}" for name, (_, line) in TOOLS.items()]
    lines += ["", "`dg-heads SUBCOMMAND --help` lists a subcommand's options."]
    return "\n".join(lines)


def _hints(function) -> dict[str, object]:
    """Each parameter's type, its `X | None` taken apart: {name: (X, ...)}."""
    hints = typing.get_type_hints(function)
    return {name: tuple(t for t in typing.get_args(hint) if t is not type(None))
            if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
            for name, hint in hints.items() if name != "return"}


def argparse_spellings(function, argv: list[str]) -> list[str]:
    """The spellings the tools took when they were argparse programs (README, sbatch scripts and
    users' notes have them), as jsonargparse's: it names an option after its parameter and gives
    every bool and list option a value. `--cache-dir X` -> `--cache_dir X`; a bare `--json` ->
    `--json=true`, `--no-check` -> `--check=false`; a repeated `--split X` -> `--split+ X` (one item
    appended). jsonargparse's own spellings pass unchanged; nothing after `--` is touched."""
    hints = _hints(function)
    bools = {name for name, types in hints.items() if types == (bool,)}
    lists = {name for name, types in hints.items() if any(typing.get_origin(t) is list for t in types)}
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + argv[i:]
        if not token.startswith("--"):
            out.append(token)
            continue
        name, equals, value = token[2:].partition("=")
        name = name.replace("-", "_")
        following = argv[i + 1] if i + 1 < len(argv) else None
        if not equals and name.startswith("no_") and name[3:] in bools:
            out.append(f"--{name[3:]}=false")
        elif not equals and name in bools and str(following).lower() not in ("true", "false"):
            out.append(f"--{name}=true")
        elif name in lists and not (value if equals else str(following)).startswith("["):
            out.append(f"--{name}+{equals}{value}")
        else:
            out.append(f"--{name}{equals}{value}")
    return out


def tool_error(function, message: str) -> str:
    """jsonargparse's error about a tool's command line as one line naming the option (`--hf: ...`,
    as the user spelled it; a positional by its name) and what it expected."""
    line = parser_error(f"error: {message}")
    options = {name: f"--{name}" for name, p in inspect.signature(function).parameters.items()
               if p.kind is p.KEYWORD_ONLY}
    required = re.match(r"the following arguments are required: (.*)", line)
    if required:
        return "the following arguments are required: " + ", ".join(
            options.get(name, name) for name in required[1].split(", "))
    unknown = re.match(r"unrecognized arguments: --(\w+)", line)
    if unknown:
        near = difflib.get_close_matches(unknown[1], list(options), n=1, cutoff=0.6)
        return line + (f"; did you mean {options[near[0]]}?" if near else "")
    key = re.match(r'Parser key "(\w+)"', message)
    if key is None:
        return line
    name = key[1]
    option = options.get(name, name)
    line = re.sub(rf"^{name}: ", f"{option}: ", line)
    spec = next((t for t in _hints(function).get(name, ()) if dataclasses.is_dataclass(t)), None)
    if spec is None:
        return line
    # a dataclass option (`--hf '{name: owner/pacs}'`): name the key of the mapping and its type
    fields = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
              for f in dataclasses.fields(spec)}
    unknown = re.search(r"Option '([\w.]+)' is not accepted", message)
    if unknown:
        return f"{option}: unknown key {unknown[1]!r}; expected some of {list(fields)}"
    given = re.findall(r"^\s*Given value: (.*)$", message, re.MULTILINE)  # the key's value first, the option's last
    if given and not given[-1].startswith("{"):
        return (f"{option}: expected a mapping of some of {list(fields)} (e.g. '{{{next(iter(fields))}: ...}}') "
                f"or a YAML file of one; got {given[-1]!r}")
    inner = re.findall(r'Parser key "(\w+)"', message)[1:]
    if inner and inner[0] in fields and len(given) > 1:
        return f"{option}: key {inner[0]!r}: expected {fields[inner[0]]}; got {given[0]!r}"
    return re.sub(r"Expected a path but .* either not accessible or invalid; ", "", line)


def spellings_help(function) -> str | None:
    """The end of a tool's `--help`: which of `argparse_spellings` its options take, with its own names."""
    parameters = inspect.signature(function).parameters
    hints = _hints(function)
    dashed = [f"--{name.replace('_', '-')}" for name, parameter in parameters.items()
              if "_" in name and parameter.kind is parameter.KEYWORD_ONLY]
    said = [f"dashes in option names ({', '.join(dashed)})"] if dashed else []
    said += [f"--no-{name} for --{name} false" if parameters[name].default is True else f"--{name} for --{name} true"
             for name, types in hints.items() if types == (bool,)]
    said += [f"--{name} a --{name} b for --{name} [a, b]" for name, types in hints.items()
             if any(typing.get_origin(t) is list for t in types)]
    return f"Also accepted: {'; '.join(said)}." if said else None


def run_tool(function, argv: list[str], prog: str):
    """Run a tool's typed function with jsonargparse's `CLI` on `argv`: its positional parameters
    are positional arguments, its keyword-only ones `--options` (the docstring's `Args:` their
    help); the argparse spellings the tool took before still work (`argparse_spellings`). A parse
    error is one line (`ConfigError`), which `main` prints; `--help` prints and exits 0."""
    import argparse

    from jsonargparse import CLI

    # the whole text before `Args:` (jsonargparse's own description would be the docstring's first line)
    description = " ".join((inspect.getdoc(function) or "").split("\nArgs:")[0].split())
    try:
        return CLI(function, args=argparse_spellings(function, argv), prog=prog, description=description,
                   epilog=spellings_help(function), exit_on_error=False)
    # only the parse raises it: no tool builds an argparse parser of its own (sweep's check of its
    # jobs runs dg-heads's Lightning parser, whose errors are ConfigError)
    except argparse.ArgumentError as error:
        raise ConfigError(tool_error(function, str(error))) from None


def run_lightning(args: list[str] | None) -> None:
    """A LightningCLI run; a SLURM requeue or kill (SIGTERM) ends with exit code 143."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from dg_heads.callbacks.requeue import Requeued
    from dg_heads.lightning_cli import DGHeadsCLI

    try:
        DGHeadsCLI(args=args)
    except Requeued as stop:  # checkpointed on SLURM's signal and requeued (RequeueOnSignal said where)
        # 143 on rank 0, whose code is the run's; 0 on the others: Lightning's local launcher kills
        # rank 0 at once when a child it started exits non-zero, before rank 0 has finished
        sys.exit(143 if stop.rank == 0 else 0)
    except SIGTERMException:  # killed or requeued (SLURM): the checkpoints on disk are the state to resume
        print("dg-heads: stopped by SIGTERM; run the same command again to resume (--ckpt_path last)",
              file=sys.stderr)
        sys.exit(143)
    except Exception as error:
        if is_collective_failure(error):  # a hang that the process group's timeout ended
            raise DGHeadsError(collective_failure_message(error)) from error
        raise


def unknown_subcommand(name: str) -> str:
    known = [*LIGHTNING, *TOOLS]
    near = difflib.get_close_matches(name, known, n=1)
    return (f"unknown subcommand {name!r}{f' (did you mean {near[0]!r}?)' if near else ''}; expected one of "
            f"{', '.join(known)} (`dg-heads --help`)")


def main(args: list[str] | None = None) -> None:
    """Console entry point; user mistakes end as one line on stderr and exit code 2.

    Subcommands: Lightning's `fit`, `validate`, `test`, `predict`; `export` (a checkpoint to a
    plain open_clip weights file); `prepare` (get and verify a benchmark); `splits` (print
    DomainBed's splits); `sweep` (a job list for a SLURM array); `collect` (result tables)."""
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    try:
        environment.check()
        if argv[0] in TOOLS:
            module, function = TOOLS[argv[0]][0].split(":")
            getattr(importlib.import_module(module), function)(argv[1:])
            return
        if not argv[0].startswith("-") and argv[0] not in LIGHTNING:  # Lightning's parser would name its 4 only
            raise DGHeadsError(unknown_subcommand(argv[0]))
        run_lightning(args)
    except Exception as error:  # a user mistake, however many layers wrapped it, is one line
        message = user_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
