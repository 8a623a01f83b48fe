"""Index a DomainBed folder `ROOT/<dataset>/<domain>/<class>/<image>` into a `SampleTable`.

Samples come in DomainBed's order (torchvision `ImageFolder`: class folders sorted, files
sorted), which the holdout split depends on. The index is written once into an Arrow file
(memory-mapped when read, so DataLoader workers share it) and rebuilt when any folder of the
copy changed (a file added, removed or renamed changes its folder's mtime). Files that are
not images are skipped and counted; layout mistakes are errors that name the path at fault.
A folder that is not in the registry has its domains and classes discovered from the scan
(`discover_folder`, checked by `dg_heads.data.own`); the index keeps them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dg_heads.data.errors import DGHeadsError
from dg_heads.data.own import Discovered, first_readable
from dg_heads.data.table import FolderReader, SampleTable, build_table, open_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_ENV = "DG_HEADS_CACHE"
INDEX_VERSION = "2"


@dataclass
class FolderScan:
    """What is on disk, before any check: files per (domain, class), non-image files, folder mtimes."""

    dataset_dir: Path
    files: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # domain -> class -> rel paths
    skipped: list[str] = field(default_factory=list)  # non-image files (relative paths)
    dir_mtimes: dict[str, int] = field(default_factory=dict)

    @property
    def domains(self) -> list[str]:
        return sorted(self.files)

    def classes(self, domain: str) -> list[str]:
        return sorted(self.files[domain])

    def count(self, domain: str) -> int:
        return sum(len(v) for v in self.files[domain].values())


def _visible_dirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def scan_folder(dataset_dir: Path) -> FolderScan:
    """Walk the copy once (folders sorted, files sorted, as `ImageFolder`)."""
    if not dataset_dir.is_dir():
        raise DGHeadsError(
            f"dataset folder {dataset_dir} does not exist; expected the DomainBed layout "
            f"ROOT/<dataset>/<domain>/<class>/<image> (set data.root, or run `dg-heads prepare`)"
        )
    scan = FolderScan(dataset_dir, dir_mtimes={".": dataset_dir.stat().st_mtime_ns})
    for domain in _visible_dirs(dataset_dir):
        scan.dir_mtimes[domain] = (dataset_dir / domain).stat().st_mtime_ns
        scan.files[domain] = {}
        for cls in _visible_dirs(dataset_dir / domain):
            scan.files[domain][cls] = _class_files(scan, f"{domain}/{cls}")
    return scan


def _class_files(scan: FolderScan, rel: str) -> list[str]:
    images = []
    for top, dirs, names in os.walk(scan.dataset_dir / rel, followlinks=True):
        dirs.sort()
        top_rel = os.path.relpath(top, scan.dataset_dir)
        scan.dir_mtimes[top_rel] = os.stat(top).st_mtime_ns
        for name in sorted(names):
            target = images if name.lower().endswith(IMAGE_EXTENSIONS) else scan.skipped
            target.append(f"{top_rel}/{name}")
    return images


def check_layout(scan: FolderScan, domains: list[str], classes: list[str]) -> None:
    """The copy must hold every expected domain, each with exactly the expected, non-empty class
    folders: anything else would silently change labels, splits or the source domains."""
    where = scan.dataset_dir
    found = scan.domains
    if not found:
        raise DGHeadsError(f"dataset folder {where} has no domain folders; expected {domains}")
    missing = [d for d in domains if d not in found]
    if missing:
        raise DGHeadsError(f"{where} lacks the domain folder(s) {missing}; expected {domains}, found {found}")
    for domain in domains:
        got = scan.classes(domain)
        lacking, extra = sorted(set(classes) - set(got)), sorted(set(got) - set(classes))
        if lacking or extra:
            raise DGHeadsError(
                f"class folders of {where / domain} differ from the other domains / the registry: "
                f"missing {lacking[:10]}{'...' if len(lacking) > 10 else ''}, extra {extra[:10]}; "
                f"every domain needs the same classes"
            )
    empty = [f"{d}/{c}" for d in domains for c in classes if not scan.files[d][c]]
    if empty:
        raise DGHeadsError(
            f"{len(empty)} empty class folder(s) in {where}: {empty[:10]}: an incomplete copy "
            f"(check it with `dg-heads prepare`)"
        )


def skip_note(scan: FolderScan) -> list[str]:
    if not scan.skipped:
        return []
    return [f"skipped {len(scan.skipped)} non-image file(s) in {scan.dataset_dir} "
            f"(e.g. {scan.skipped[:3]}); images are {', '.join(IMAGE_EXTENSIONS)}"]


def discover_folder(scan: FolderScan) -> Discovered:
    """A folder not in the registry, as DomainBed reads one: domains the sorted subfolders,
    classes the sorted class folders (checked by `Discovered.problems`)."""
    domains = scan.domains
    non_images = Counter(rel.split("/", 1)[0] for rel in scan.skipped)

    def read_one(domain: str) -> str | None:
        files = (f for c in scan.classes(domain) for f in scan.files[domain][c])
        return first_readable(files, lambda rel: open_rgb(scan.dataset_dir / rel), lambda rel: scan.dataset_dir / rel)

    return Discovered(
        str(scan.dataset_dir), domains, sorted({c for d in domains for c in scan.files[d]}),
        {d: {c: len(scan.files[d][c]) for c in scan.classes(d)} for d in domains},
        non_images=dict(non_images), read_one=read_one,
    )


def table_from_scan(scan: FolderScan, domains: list[str], classes: list[str]) -> pa.Table:
    d_idx, labels, ids = [], [], []
    for di, domain in enumerate(domains):
        for li, cls in enumerate(classes):
            paths = scan.files[domain][cls]
            d_idx += [di] * len(paths)
            labels += [li] * len(paths)
            ids += paths
    return build_table(classes, domains, d_idx, labels, ids)


# ------------------------------------------------------------------ Arrow index cache
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dg_heads") / "index"


def _cache_path(dataset_dir: Path) -> Path:
    key = hashlib.sha1(str(dataset_dir.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / f"{dataset_dir.name}-{key}.arrow"


def _unchanged(dataset_dir: Path, dir_mtimes: dict[str, int]) -> bool:
    try:
        return all((dataset_dir / rel).stat().st_mtime_ns == mtime for rel, mtime in dir_mtimes.items())
    except OSError:
        return False


def _read_cache(path: Path, dataset_dir: Path, domains: list[str] | None, classes: list[str] | None):
    """(table, notes, domains, classes) of an index still valid for the folder, else None.
    Discovered domains and classes (None given) are the index's: any change to the folders'
    names changes an mtime it recorded."""
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        found_domains, found_classes = json.loads(meta["domains"]), json.loads(meta["classes"])
        if (meta.get("version") != INDEX_VERSION or meta.get("discovered") != str(domains is None)
                or (domains is not None and (found_domains != domains or found_classes != classes))
                or not _unchanged(dataset_dir, json.loads(meta["dir_mtimes"]))):
            return None
        return table, json.loads(meta["notes"]), found_domains, found_classes
    except (OSError, KeyError, ValueError, pa.ArrowInvalid):
        return None  # no cache, a stale format or a half-written file: index again


def _write_cache(path: Path, table: pa.Table, scan: FolderScan, domains, classes, notes, discovered: bool) -> None:
    meta = {"version": INDEX_VERSION, "domains": json.dumps(domains), "classes": json.dumps(classes),
            "discovered": str(discovered),
            "dir_mtimes": json.dumps(scan.dir_mtimes), "notes": json.dumps(notes),
            "folder": str(scan.dataset_dir.resolve())}
    table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)  # atomic: concurrent array tasks never read half a file


def load_folder_table(dataset_dir: Path, domains: list[str] | None, classes: list[str] | None,
                      use_cache: bool = True) -> SampleTable:
    """The copy's `SampleTable`, from the Arrow cache when the folders did not change.
    `domains` and `classes` None: a folder not in the registry, its layout discovered."""
    path = _cache_path(dataset_dir)
    discovered = domains is None
    cached = _read_cache(path, dataset_dir, domains, classes) if use_cache else None
    if cached is None:
        scan = scan_folder(dataset_dir)
        if discovered:
            domains, classes = discover_folder(scan).checked()
        else:
            check_layout(scan, domains, classes)
        table, notes = table_from_scan(scan, domains, classes), skip_note(scan)
        if use_cache:
            _write_cache(path, table, scan, domains, classes, notes, discovered)
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    else:
        table, notes, domains, classes = cached
    return SampleTable(list(classes), list(domains), table, FolderReader(dataset_dir, table.column("id")), notes)
