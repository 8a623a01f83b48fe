"""A dataset of your own, not in the registry, used with no code: its domains and classes are discovered.

A folder is read as DomainBed's `MultipleEnvironmentImageFolder` reads one: the domains are the
sorted subfolders of `ROOT/<name>`, the classes the sorted class folders of each domain
(torchvision `ImageFolder`), and the prompt words come from the folder names (`data.class_names`
overrides them). A Hugging Face dataset's domains and classes are the distinct values of its
domain and label columns (a `ClassLabel`'s names where present), sorted the same way (numbers
numerically). The rest follows from the sample table, exactly as for a registered benchmark:
the in/out splits, model selection, logging, `splits.json`.

What the registry checks for a benchmark (every domain holds the same classes, none is empty) is
checked here against the dataset itself, naming the domain and the classes at fault; and a DG
dataset needs two domains or more, each with an image that can be read.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dg_heads.data.errors import DGHeadsError
from dg_heads.data.registry import DatasetInfo, get_dataset, known_names

LAYOUT = "<folder>/<domain>/<class>/<image>"


def looks_like_path(text: str) -> bool:
    """`./cams`, `~/data/cams`, `/data/cams`, `data/cams` name a folder; `cams` is a name under the root."""
    return "/" in text or os.sep in text or text.startswith(("~", "."))


def resolve_dataset(dataset: str, root: Path, hf: bool = False) -> DatasetInfo:
    """The registry's entry for a benchmark's name; else a dataset of one's own, to be discovered:
    a Hugging Face source (`hf`: the name only names the runs), a folder path, or `root/<name>`."""
    text = str(dataset)
    if not looks_like_path(text):
        try:
            return get_dataset(text)
        except DGHeadsError:
            pass
    if hf:
        return DatasetInfo(text, "", (), (), own=True)
    folder = (Path(text).expanduser() if looks_like_path(text) else Path(root).expanduser() / text).resolve()
    if not folder.is_dir():
        raise DGHeadsError(
            f"unknown dataset {text!r}; expected one of {known_names()}, or a folder of your own "
            f"{LAYOUT}: there is no folder {folder} (a name is looked up under data.root, else "
            f"$DG_HEADS_DATA; or give the folder's path)"
        )
    return DatasetInfo(folder.name if looks_like_path(text) else text, str(folder), (), (), own=True)


def with_layout(info: DatasetInfo, domains: Iterable[str], classes: Iterable[str]) -> DatasetInfo:
    """A discovered dataset's entry, once its domains and classes are known."""
    return replace(info, domains=tuple(domains), classes=tuple(classes))


def first_readable(items: Iterable, read: Callable, describe: Callable) -> str | None:
    """None as soon as one of `items` decodes as an image; else why the first one did not."""
    first_error = None
    for item in items:
        try:
            read(item)
            return None
        except Exception as error:  # a probe: whatever the decoder raises, this one cannot be read
            first_error = first_error or f"e.g. {describe(item)}: {type(error).__name__}: {error}"
    return first_error or "none found"


def _few(names: list, shown: int = 10) -> str:
    return str(list(names[:shown]))[:-1] + (f", ... ({len(names)} in all)]" if len(names) > shown else "]")


@dataclass
class Discovered:
    """What a dataset of one's own holds, before any check: images per domain and class.

    `domains` and `class_order` are in DomainBed's order; `counts[domain]` holds every class found
    in that domain (for a folder, every class folder, empty or not)."""

    where: str  # the folder, or the Hugging Face source and its columns
    domains: list[str]
    class_order: list[str]
    counts: dict[str, dict[str, int]]
    folder: bool = True  # classes are folders (else values of a label column)
    non_images: dict[str, int] = field(default_factory=dict)  # files skipped per domain (folders)
    read_one: Callable[[str], str | None] | None = None  # None when an image of the domain decodes
    notes: list[str] = field(default_factory=list)

    def place(self, domain: str) -> str:
        return f"{self.where}/{domain}" if self.folder else self.where

    def images(self, domain: str) -> int:
        return sum(self.counts[domain].values())

    @property
    def classes(self) -> list[str]:
        """The class set most domains share (ties: the first domain's), in DomainBed's order."""
        sets = Counter(frozenset(self.counts[d]) for d in self.domains if self.images(d))
        common = sets.most_common(1)[0][0] if sets else frozenset()
        return [c for c in self.class_order if c in common]

    def problems(self) -> list[str]:
        """Everything that keeps it from being a DG dataset, each naming the domain and classes."""
        what = "class folders" if self.folder else "classes"
        out = []
        if len(self.domains) < 2:
            out.append(f"{self.where}: found {len(self.domains)} domain(s) {self.domains}; DG needs at least "
                       f"two (sources to train on, one to test on)"
                       + (f", as {LAYOUT}" if self.folder else ""))
        classes = self.classes
        for domain in self.domains:
            n, place = self.images(domain), self.place(domain)
            if not n:
                skipped = self.non_images.get(domain, 0)
                out.append(f"domain {domain!r} ({place}) holds no readable image: "
                           f"{len(self.counts[domain])} class folder(s), {skipped} non-image file(s)")
                continue
            got = [c for c in self.class_order if c in self.counts[domain]]
            if got != classes:
                lacking = [c for c in classes if c not in got]
                extra = [c for c in got if c not in classes]
                diff = ", ".join(f"{k} {_few(v)}" for k, v in (("missing", lacking), ("extra", extra)) if v)
                out.append(f"the {what} of domain {domain!r} ({place}) differ from the other domains': "
                           f"it has {_few(got)}, they have {_few(classes)} ({diff}); every domain needs "
                           f"the same classes")
                continue
            empty = [c for c in got if not self.counts[domain][c]]
            if empty:
                out.append(f"domain {domain!r} ({place}): empty class folder(s) {_few(empty)}")
                continue
            why = self.read_one(domain) if self.read_one else None
            if why is not None:
                out.append(f"domain {domain!r} ({place}) holds no readable image: none of its {n} "
                           f"image(s) can be read ({why})")
        return out

    def checked(self) -> tuple[list[str], list[str]]:
        """(domains, classes), or the first problem as an error (and how many more there are)."""
        problems = self.problems()
        if problems:
            more = len(problems) - 1
            raise DGHeadsError(problems[0] + (f" ({more} more problem(s): `dg-heads prepare` lists them)"
                                              if more else ""))
        return list(self.domains), self.classes
