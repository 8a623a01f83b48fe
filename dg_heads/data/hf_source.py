"""Hugging Face `datasets` as a DG source: a hub dataset by name, a saved dataset, or parquet files.

The dataset's rows become the same `SampleTable` as a DomainBed folder: class and domain
values are matched to the registry's by their words (`Alarm_Clock` == "alarm clock"), labels
follow the registry's (sorted) class order, and rows within a domain are ordered by class, then
by `id_column` (relative paths reproduce the folder source's order exactly) or row number.
A dataset that is not in the registry has its domains and classes discovered from the same
columns instead (`discover_hf`, checked by `dg_heads.data.own`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dg_heads.data.errors import DGHeadsError
from dg_heads.data.own import Discovered, first_readable
from dg_heads.data.registry import DatasetInfo, prompt_name
from dg_heads.data.table import SampleTable, build_table, open_rgb


@dataclass
class HFSource:
    """Where the rows come from and which columns hold what.

    Args:
        name: a hub dataset (`owner/name`, read through `datasets.load_dataset`) or a local
            folder of data files.
        path: a dataset written by `Dataset.save_to_disk` (read with `load_from_disk`).
        data_files: parquet files (paths or globs).
        config: the hub dataset's configuration.
        revision: a hub commit or tag, for reproducible tables.
        splits: which splits to use (concatenated in this order); null means all of them.
        image_column / label_column / domain_column: the columns holding each.
        id_column: a column of stable sample ids (e.g. relative paths); null uses row numbers.
    """

    name: str | None = None
    path: str | None = None
    data_files: list[str] | None = None
    config: str | None = None
    revision: str | None = None
    splits: list[str] | None = None
    image_column: str = "image"
    label_column: str = "label"
    domain_column: str = "domain"
    id_column: str | None = None

    def describe(self) -> str:
        return self.name or self.path or f"parquet files {self.data_files}"


def _load(source: HFSource):
    import datasets

    given = [x for x in (source.name, source.path, source.data_files) if x]
    if len(given) != 1:
        raise DGHeadsError("data.hf needs exactly one of name, path or data_files")
    try:
        if source.path:
            if not Path(source.path).exists():
                raise DGHeadsError(f"data.hf.path {source.path} does not exist")
            loaded = datasets.load_from_disk(source.path)
        elif source.data_files:
            loaded = datasets.load_dataset("parquet", data_files=list(source.data_files))
        else:
            loaded = datasets.load_dataset(source.name, source.config, revision=source.revision)
    except DGHeadsError:
        raise
    except Exception as error:  # datasets raises many types; the user needs to know which source failed
        raise DGHeadsError(f"cannot load Hugging Face dataset {source.describe()}: "
                           f"{type(error).__name__}: {error}") from None
    if isinstance(loaded, datasets.Dataset):
        return loaded.flatten_indices() if loaded._indices is not None else loaded  # rows as stored
    names = source.splits or list(loaded)
    unknown = [s for s in names if s not in loaded]
    if unknown:
        raise DGHeadsError(f"{source.describe()} has no split(s) {unknown}; it has {list(loaded)}")
    parts = [loaded[s] for s in names]
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _values(dataset, column: str) -> tuple[list[str], np.ndarray | list]:
    """A column's values as names: ClassLabel ints map to their names, strings stay."""
    feature = dataset.features[column]
    values = dataset.select_columns([column]).data.column(column).to_pylist()
    names = getattr(feature, "names", None)
    if names is not None:
        return [names[v] for v in values], names
    return values, None


def _match(found: list, expected: tuple[str, ...], what: str, source: HFSource, column: str) -> dict:
    """Map each distinct value to its registry index by words; name what does not match."""
    by_words = {prompt_name(e): i for i, e in enumerate(expected)}
    mapping, unknown = {}, []
    for value in sorted(set(found), key=str):
        key = prompt_name(str(value))
        if key in by_words:
            mapping[value] = by_words[key]
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(expected):
            mapping[value] = int(value)  # plain integer labels: the registry's class order
        else:
            unknown.append(value)
    if unknown:
        raise DGHeadsError(f"{source.describe()}: {what} value(s) {unknown[:10]} in column {column!r} are "
                           f"not among the registry's {list(expected)[:20]}")
    return mapping


def _check_columns(dataset, source: HFSource) -> None:
    columns = list(dataset.column_names)
    for role, column in (("image", source.image_column), ("label", source.label_column),
                         ("domain", source.domain_column), ("id", source.id_column)):
        if column is not None and column not in columns:
            raise DGHeadsError(
                f"Hugging Face dataset {source.describe()} has no {role} column {column!r}; its columns "
                f"are {columns}: set data.hf.{role}_column"
                + (" (DG needs one domain per row)" if role == "domain" else "")
            )


def _table(dataset, source: HFSource, classes: list[str], domains: list[str], domain_index: list[int],
           label_index: list[int], notes: list[str] | None = None) -> SampleTable:
    rows = list(range(len(dataset)))
    ids = (_values(dataset, source.id_column)[0] if source.id_column else [f"{r:010d}" for r in rows])
    table = build_table(classes, domains, domain_index, label_index, [str(i) for i in ids], extra={"row": rows})
    images = dataset.select_columns([source.image_column])
    return SampleTable(classes, domains, table,
                       HFReader(images, source.image_column, table.column("row").to_numpy(), source.describe()),
                       notes or [])


def load_hf_table(source: HFSource, info: DatasetInfo) -> SampleTable:
    if info.own:
        table, found = discover_hf(source)
        found.checked()
        return table
    dataset = _load(source)
    _check_columns(dataset, source)
    domain_values, _ = _values(dataset, source.domain_column)
    label_values, _ = _values(dataset, source.label_column)
    domain_map = _match(domain_values, info.domains, "domain", source, source.domain_column)
    label_map = _match(label_values, info.classes, "label", source, source.label_column)
    missing = [d for i, d in enumerate(info.domains) if i not in set(domain_map.values())]
    if missing:
        raise DGHeadsError(f"{source.describe()} holds no rows of domain(s) {missing}; expected {list(info.domains)}")
    return _table(dataset, source, list(info.classes), list(info.domains), [domain_map[v] for v in domain_values],
                  [label_map[v] for v in label_values])


def _ordered(values: list) -> list:
    """Distinct values in DomainBed's (sorted) order: numbers numerically, anything else as text."""
    distinct = set(values)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in distinct):
        return sorted(distinct)
    return sorted(distinct, key=str)


def discover_hf(source: HFSource) -> tuple[SampleTable, Discovered]:
    """A Hugging Face dataset not in the registry: its domains and classes are the sorted distinct
    values of its domain and label columns (a `ClassLabel`'s names where it is one)."""
    dataset = _load(source)
    _check_columns(dataset, source)
    domain_values, _ = _values(dataset, source.domain_column)
    label_values, label_names = _values(dataset, source.label_column)
    domain_order, class_order = _ordered(domain_values), _ordered(label_values)
    domains, classes = [str(v) for v in domain_order], [str(v) for v in class_order]
    domain_at = {v: i for i, v in enumerate(domain_order)}
    class_at = {v: i for i, v in enumerate(class_order)}
    notes = []
    if label_names is None and all(isinstance(v, (int, np.integer)) for v in class_order):
        notes.append(f"label column {source.label_column!r} of {source.describe()} holds plain integers with no "
                     f"ClassLabel names: the prompts read {classes[:3]}...; set data.class_names (the class "
                     f"names in label order)")
    table = _table(dataset, source, classes, domains, [domain_at[v] for v in domain_values],
                   [class_at[v] for v in label_values], notes)
    counts: dict[str, dict[str, int]] = {d: {} for d in domains}
    for (d, c), n in sorted(Counter(zip(table.domain_of.tolist(), table.labels.tolist())).items()):
        counts[domains[d]][classes[c]] = n

    def read_one(domain: str) -> str | None:
        return first_readable(table.rows_of(domain).tolist(), table.reader.read, table.reader.describe)

    where = f"{source.describe()} (domain column {source.domain_column!r}, label column {source.label_column!r})"
    return table, Discovered(where, domains, classes, counts, folder=False, read_one=read_one, notes=notes)


class HFReader:
    """Images from a `datasets.Dataset` column (decoded `Image` feature, bytes or a path)."""

    def __init__(self, dataset, column: str, rows: np.ndarray, name: str) -> None:
        self.dataset, self.column, self.rows, self.name = dataset, column, rows, name

    def describe(self, row: int) -> str:
        return f"row {int(self.rows[row])} of {self.name}"

    def read(self, row: int):
        value = self.dataset[int(self.rows[row])][self.column]
        if isinstance(value, dict):  # an undecoded Image feature
            value = value.get("bytes") or value.get("path")
        if hasattr(value, "convert"):
            value.load()
            return value.convert("RGB")
        return open_rgb(value)
