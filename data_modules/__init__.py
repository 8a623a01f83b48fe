"""The old name of `dg_heads.data`, kept so that configs written before the rename still load.

`class_path: data_modules.DomainBedDataModule` (or `data_modules.domainbed.DomainBedDataModule`,
any `data_modules.X` module) resolves to the same class in `dg_heads.data`, with one warning line
that names the new path.

Why a finder rather than one stub file per module: a stub re-exporting `*` would drop the private
names old code imports, and fifteen stubs would each have to follow every module added to
`dg_heads.data`; this file maps every present and future submodule to the very module object.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

_OLD, _NEW = "data_modules", "dg_heads.data"


_WARNED: set[str] = set()


def _deprecated(old: str, new: str) -> None:
    """One warning line a name, from the first process only (every DDP / SLURM rank imports it)."""
    rank = next((os.environ[v] for v in ("RANK", "SLURM_PROCID", "LOCAL_RANK") if os.environ.get(v)), "0")
    if old in _WARNED or rank != "0":
        return
    _WARNED.add(old)
    warnings.warn(f"{old} is now {new}: write that (e.g. as the data class_path in your config); the old "
                  f"name {_OLD} will be removed in a later release", FutureWarning, stacklevel=3)


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`data_modules.X` -> the module object `dg_heads.data.X` (one object: classes compare equal)."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_OLD + "."):
            return None
        new = _NEW + fullname[len(_OLD):]
        if importlib.util.find_spec(new) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = _NEW + spec.name[len(_OLD):]
        _deprecated(spec.name, new)
        module = importlib.import_module(new)
        self._spec = module.__spec__  # the import system overwrites __spec__ with ours: put it back in exec_module
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec


if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.append(_Alias())


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    data = importlib.import_module(_NEW)
    try:
        value = getattr(data, name)
    except AttributeError:
        raise AttributeError(f"module {_OLD!r} has no attribute {name!r}") from None
    _deprecated(f"{_OLD}.{name}", f"{_NEW}.{name}")
    return value
