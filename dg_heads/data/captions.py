"""Image-caption data for retrieval: one split of a dataset as images plus every image's captions.

Sources:
- the built-in `digit_captions` (`dg_heads.data.digit_captions`, no download);
- Hugging Face `datasets` (`CaptionSource`): a hub repository or local files as parquet with an
  image column, a list-of-captions column and, optionally, a split column (Karpathy's
  train/val/test); webdataset shards (`jpg` + `txt`, one caption a line, as CLIP_benchmark's
  `wds_flickr30k` and `wds_mscoco_captions`); a dataset written by `Dataset.save_to_disk`; a
  local folder in the `imagefolder` layout with a `metadata.jsonl` (`file_name` and a caption
  string or list).

Read offline from the `datasets` cache when `HF_DATASETS_OFFLINE=1` (`dg-heads prepare` fills it
on a machine with network access).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dg_heads.data.errors import DGHeadsError
from dg_heads.data.own import looks_like_path
from dg_heads.data.registry import CAPTION_DATASETS, CaptionDatasetInfo

IMAGE_COLUMNS = ("image", "jpg", "jpeg", "png", "webp", "img")
CAPTION_COLUMNS = ("caption", "captions", "sentences", "txt", "text", "raw")
DEFAULT_SPLIT_VALUES = {"train": ["train", "restval"], "val": ["val", "validation", "dev"], "test": ["test"]}


@dataclass
class CaptionSource:
    """Where a caption dataset's rows come from and which columns hold what.

    Args:
        name: a hub dataset (`owner/name`, read with `datasets.load_dataset`) or a local folder
            (an `imagefolder` with `metadata.jsonl`, or a folder of parquet or tar files).
        path: a dataset written by `Dataset.save_to_disk` (read with `load_from_disk`).
        data_files: parquet or webdataset `.tar` files (paths or globs), or `{split: files}`; with
            `name`, files of that hub dataset or folder (e.g. `{test: test/*.tar}`: its test split alone).
        format: the `datasets` builder for `data_files` or a folder: `parquet`, `webdataset`,
            `imagefolder`; null: from the file names.
        config / revision: the hub dataset's configuration and commit (or tag).
        image_column: null: the first of `image`, `jpg`, `jpeg`, `png`, `webp`, `img` present.
        caption_column: a list of strings, or one string holding one caption a line; null: the
            first of `caption`, `captions`, `sentences`, `txt`, `text`, `raw` present.
        split_column: a column naming each row's split (Karpathy's `train`/`val`/`test`/
            `restval`); null: `split` where present.
        split_values: which values of `split_column` make each split (default: train = train
            and restval, val = val/validation/dev, test = test).
        id_column: a column of stable image ids (file names); null: row numbers.
        holdout_val: a source with no validation split: this many training images (a fixed,
            seeded choice) are held out as `val` and left out of `train`.
    """

    name: str | None = None
    path: str | None = None
    data_files: list[str] | dict[str, str | list[str]] | None = None
    format: str | None = None
    config: str | None = None
    revision: str | None = None
    image_column: str | None = None
    caption_column: str | None = None
    split_column: str | None = None
    split_values: dict[str, list[str]] | None = None
    id_column: str | None = None
    holdout_val: int | None = None

    def describe(self) -> str:
        return self.name or self.path or f"{self.format or 'data'} files {self.data_files}"


def source_from(value: Any, where: str) -> CaptionSource:
    """A `CaptionSource` from a config mapping, naming an unknown key."""
    if isinstance(value, CaptionSource):
        return value
    if not isinstance(value, dict):
        raise DGHeadsError(f"{where}: expected a mapping of CaptionSource fields, got {value!r}")
    known = [f.name for f in dataclasses.fields(CaptionSource)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise DGHeadsError(f"{where}: unknown key(s) {unknown}; expected some of {known}")
    return CaptionSource(**value)


@dataclass
class CaptionSplit:
    """One split: `reader.read(i)` is image `i` (0..N-1), `captions[i]` all its captions in a fixed order."""

    name: str  # how metrics name it (`test/<name>/...`)
    dataset: str  # the registry name or the source
    split: str
    reader: Any
    captions: list[list[str]]
    ids: list[str]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)

    def head(self, n: int | None) -> "CaptionSplit":
        """The first `n` images (all with None): image `i` stays image `i`."""
        if n is None or n >= len(self):
            return self
        return dataclasses.replace(self, captions=self.captions[:n], ids=self.ids[:n])


def known_caption_names() -> str:
    return f"{sorted(CAPTION_DATASETS)}, a local path or a Hugging Face dataset id (owner/name)"


def resolve(dataset: str, source: CaptionSource | dict | None = None, where: str = "data.init_args.dataset"
            ) -> tuple[str, CaptionSource | None, CaptionDatasetInfo | None]:
    """(name, source, registry entry) of a dataset reference: a registry name (its source unless
    `source` is given), a local path (a saved dataset, an imagefolder or a folder of data files),
    or a hub id `owner/name`."""
    if source is not None:
        source = source_from(source, where + " source")
    text = str(dataset)
    info = CAPTION_DATASETS.get(text)
    if info is not None:
        if source is None and info.source is not None:
            source = CaptionSource(**info.source)
        return text, source, info
    if source is not None:
        return text, source, None
    if looks_like_path(text) and os.path.exists(os.path.expanduser(text)):
        return os.path.basename(os.path.normpath(text)), local_source(os.path.expanduser(text)), None
    if "/" in text and not text.startswith(("/", ".", "~")):  # owner/name on the hub
        return text, CaptionSource(name=text), None
    raise DGHeadsError(f"{where}: unknown caption dataset {text!r}; expected one of {known_caption_names()}"
                       + (" (no such path)" if looks_like_path(text) else ""))


def local_source(path: str) -> CaptionSource:
    """A local caption dataset by what the path holds."""
    if os.path.isfile(path):
        return CaptionSource(data_files=[path])
    entries = set(os.listdir(path))
    if entries & {"dataset_info.json", "state.json", "dataset_dict.json"}:
        return CaptionSource(path=path)
    return CaptionSource(name=path)  # `datasets` infers imagefolder (metadata.jsonl), parquet, webdataset


def load_split(dataset: str, source: CaptionSource | None, split: str, name: str,
               cache_dir: str | None = None) -> CaptionSplit:
    if source is None:
        info = CAPTION_DATASETS.get(dataset)
        if info is None or not info.builtin:
            raise DGHeadsError(f"caption dataset {dataset!r} has no source")
        return builtin_split(dataset, split, name)
    return source_split(source, split, name, dataset, cache_dir)


def builtin_split(dataset: str, split: str, name: str | None = None) -> CaptionSplit:
    from dg_heads.data import digit_captions

    reader, caps = digit_captions.load_split(split)
    return CaptionSplit(name or dataset, dataset, split, reader, caps, list(reader.ids))


# ------------------------------------------------------------------ Hugging Face `datasets` sources
def _format_of(files: list[str]) -> str | None:
    suffixes = {Path(f).suffix.lower() for f in files}
    if suffixes <= {".parquet"}:
        return "parquet"
    if suffixes <= {".tar"}:
        return "webdataset"
    return None


_LOADED: dict[str, dict] = {}  # a source's splits, once per process (train, val and test read the same)


def _load(source: CaptionSource, cache_dir: str | None) -> dict:
    """Every split of the source, as `{split name: datasets.Dataset}` (memory-mapped from the cache)."""
    key = repr((source, cache_dir))
    if key not in _LOADED:
        _LOADED[key] = _load_uncached(source, cache_dir)
    return _LOADED[key]


def _load_uncached(source: CaptionSource, cache_dir: str | None) -> dict:
    import datasets

    given = [x for x in (source.name, source.path) if x]
    if len(given) > 1 or not (given or source.data_files):
        raise DGHeadsError(f"caption source {source.describe()}: give exactly one of name or path, or data_files")
    try:
        if source.path:
            if not Path(source.path).exists():
                raise DGHeadsError(f"caption source path {source.path} does not exist (a folder written by "
                                   f"Dataset.save_to_disk)")
            loaded = datasets.load_from_disk(source.path)
        elif source.data_files and not source.name:
            files = source.data_files
            listed = [f for v in (files.values() if isinstance(files, dict) else [files]) for f in
                      ([v] if isinstance(v, str) else v)]
            fmt = source.format or _format_of(listed)
            if fmt is None:
                raise DGHeadsError(f"caption source data_files {listed}: cannot tell the format from the file "
                                   f"names; set format: parquet or webdataset")
            loaded = datasets.load_dataset(fmt, data_files=files, cache_dir=cache_dir)
        elif source.name.startswith((".", "/", "~")) and not Path(source.name).expanduser().exists():
            raise DGHeadsError(f"caption source name {source.name}: no such file or folder (a local path; a "
                               f"Hugging Face dataset is named owner/name)")
        elif source.format and Path(source.name).expanduser().is_dir():
            loaded = datasets.load_dataset(source.format, data_dir=str(Path(source.name).expanduser()),
                                           data_files=source.data_files, cache_dir=cache_dir)
        else:
            name = str(Path(source.name).expanduser()) if Path(source.name).expanduser().is_dir() else source.name
            loaded = datasets.load_dataset(name, source.config, revision=source.revision,
                                           data_files=source.data_files, cache_dir=cache_dir)
    except DGHeadsError:
        raise
    except Exception as error:  # datasets raises many types; the user needs to know which source failed
        offline = os.environ.get("HF_DATASETS_OFFLINE", "") not in ("", "0") or \
            os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = (" (offline: fetch it into the cache first, on a machine with network access, with "
                "`dg-heads prepare <dataset>` and the same HF_DATASETS_CACHE)" if offline else "")
        raise DGHeadsError(f"cannot load caption dataset {source.describe()}: {type(error).__name__}: "
                           f"{error}{hint}") from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def _column(dataset, given: str | None, candidates: tuple[str, ...], role: str, key: str, source) -> str:
    columns = list(dataset.column_names)
    if given is not None:
        if given not in columns:
            raise DGHeadsError(f"caption dataset {source.describe()} has no {role} column {given!r}; its columns "
                               f"are {columns}: set {key}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None:
        raise DGHeadsError(f"caption dataset {source.describe()} has no {role} column: none of {list(candidates)} "
                           f"among its columns {columns}; set {key} to the column holding the {role}s")
    return found


def _as_captions(value, row: int, column: str, source: CaptionSource) -> list[str]:
    if isinstance(value, str):
        out = [line.strip() for line in value.splitlines() if line.strip()]
    elif isinstance(value, (list, tuple)):
        out = [str(v).strip() for v in value if v is not None and str(v).strip()]
    else:
        raise DGHeadsError(f"caption dataset {source.describe()}: row {row} of caption column {column!r} holds "
                           f"{type(value).__name__} {value!r}; expected a string or a list of strings")
    if not out:
        raise DGHeadsError(f"caption dataset {source.describe()}: row {row} has no caption in column {column!r}")
    return out


def _split_values(source: CaptionSource, split: str) -> list[str]:
    values = (source.split_values or {}).get(split)
    return list(values) if values else DEFAULT_SPLIT_VALUES.get(split, [split])


def _values(dataset, column: str, rows: np.ndarray | None = None) -> list:
    """A column's values (of `rows`), read from Arrow without decoding any other column."""
    values = dataset.select_columns([column]).data.column(column)
    if rows is not None:
        values = values.take(rows)
    return values.to_pylist()


def _native(parts: dict, source: CaptionSource, split: str):
    """(dataset, rows, how) of `split` as the source has it: the split of that name (val: also
    `validation`, `dev`), narrowed to the rows whose split column says so; (dataset, None, why not)
    where there are none. Rows are row numbers of `dataset` (nothing is copied)."""
    import datasets

    names = [s for s in dict.fromkeys([split, *_split_values(source, split)]) if s in parts]
    chosen = [parts[names[0]]] if names else list(parts.values())
    chosen = [d.flatten_indices() if d._indices is not None else d for d in chosen]
    dataset = datasets.concatenate_datasets(chosen) if len(chosen) > 1 else chosen[0]
    split_column = source.split_column or ("split" if "split" in dataset.column_names else None)
    if split_column is None:
        if names:
            return dataset, np.arange(len(dataset)), f"split {names[0]!r}"
        return dataset, None, f"its splits are {list(parts)} and it has no split column"
    if split_column not in dataset.column_names:
        raise DGHeadsError(f"caption dataset {source.describe()} has no split column {split_column!r}; its "
                           f"columns are {list(dataset.column_names)}: set split_column")
    wanted = sorted(set(_split_values(source, split)))
    values = [str(v) for v in _values(dataset, split_column)]
    rows = np.asarray([i for i, v in enumerate(values) if v in wanted], dtype=np.int64)
    if not len(rows):
        return dataset, None, f"no row has {split_column} in {wanted} (it holds {sorted(set(values))})"
    where = f"split {names[0]!r}, " if names else ""
    return dataset, rows, f"{where}rows with {split_column} in {wanted}"


class MissingSplit(DGHeadsError):
    """A split the caption source does not have (`how`: the splits it has)."""

    def __init__(self, message: str, how: str) -> None:
        super().__init__(message)
        self.how = how


def _pick(parts: dict, source: CaptionSource, split: str):
    """(dataset, rows, how) of `split`; with `holdout_val` and no val split of its own, val is a
    fixed share of the training rows and train the rest."""
    if source.holdout_val and split in ("train", "val") and _native(parts, source, "val")[1] is None:
        dataset, train, how = _native(parts, source, "train")
        if train is None:
            raise DGHeadsError(f"caption dataset {source.describe()} has no train split to hold val out of: {how}")
        held = holdout_rows(len(train), source.holdout_val, source.describe())
        if split == "val":
            return dataset, train[held], f"{len(held)} images held out of {how}"
        keep = np.setdiff1d(np.arange(len(train)), held)
        return dataset, train[keep], f"{how}, less {len(held)} held out as val"
    dataset, rows, how = _native(parts, source, split)
    if rows is None:
        raise MissingSplit(f"split {split!r} of caption dataset {source.describe()} is empty or missing: {how}; "
                           f"choose another split (the entry's split, or data.init_args.train_split), set "
                           f"holdout_val, or set split_column", how=how)
    return dataset, rows, how


def holdout_rows(n: int, count: int, what: str) -> np.ndarray:
    """`count` of `n` training rows held out as val: a fixed (seed 0) choice, sorted."""
    if not 0 < count < n:
        raise DGHeadsError(f"holdout_val={count} of caption dataset {what}: it has {n} training images; "
                           f"expected 0 < holdout_val < {n}")
    return np.sort(np.random.default_rng(0).permutation(n)[:count])


def source_split(source: CaptionSource, split: str, name: str, dataset: str,
                 cache_dir: str | None = None) -> CaptionSplit:
    """One split of a `datasets` source: its images (read on demand) and every image's captions."""
    from dg_heads.data.hf_source import HFReader

    parts = _load(source, cache_dir)
    data, rows, how = _pick(parts, source, split)
    if len(rows) == 0:
        raise DGHeadsError(f"split {split!r} of caption dataset {source.describe()} is empty ({how})")
    image_column = _column(data, source.image_column, IMAGE_COLUMNS, "image", "the source's image_column", source)
    caption_column = _column(data, source.caption_column, CAPTION_COLUMNS, "caption",
                             "the source's caption_column", source)
    caps = [_as_captions(v, int(r), caption_column, source) for r, v in zip(rows, _values(data, caption_column, rows))]
    id_column = source.id_column
    if id_column is None:
        id_column = next((c for c in ("__key__", "filename", "file_name", "img_id", "cocoid")
                          if c in data.column_names), None)
    elif id_column not in data.column_names:
        raise DGHeadsError(f"caption dataset {source.describe()} has no id column {id_column!r}; its columns are "
                           f"{list(data.column_names)}: set id_column")
    ids = [str(v) for v in _values(data, id_column, rows)] if id_column else [f"{int(r):08d}" for r in rows]
    reader = HFReader(data.select_columns([image_column]), image_column, rows, f"{source.describe()} ({how})")
    return CaptionSplit(name, dataset, split, reader, caps, ids)
