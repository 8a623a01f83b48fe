"""Get a benchmark onto disk and check a copy against the registry (`dg-heads prepare`).

Where a stable source exists, archives are downloaded (resumable `.part` files), checked against
their sha256 where one is published, and unpacked through a temporary folder, so an interrupted
run never leaves a copy that looks complete. Otherwise the manual steps are printed. Either way
the copy is then verified: domains, class folders, empty classes, non-image files, and images
per domain (and per class, where the registry tabulates them) against the registry's counts.
A dataset of one's own (a folder or a Hugging Face dataset not in the registry) has nothing to
download or compare with: the report says what was found (domains, classes, images per domain
and class) and what keeps it from being used (`dg_heads.data.own`).
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from dg_heads.data import rotated_digits
from dg_heads.data.errors import DGHeadsError
from dg_heads.data.folder import discover_folder, scan_folder, skip_note
from dg_heads.data.hf_source import HFSource, discover_hf
from dg_heads.data.own import Discovered
from dg_heads.data.registry import Archive, DatasetInfo, manual_steps, prompt_name

CHUNK = 1 << 20


@dataclass
class CopyReport:
    """What a copy holds compared with the registry; `ok` when nothing is missing or extra."""

    dataset: str
    folder: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # domain -> class -> images
    found: Discovered | None = None  # a dataset of one's own: what was discovered

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        verdict = "complete" if self.found is None else "usable"
        head = f"{self.dataset} at {self.folder}: " + (verdict if self.ok else f"{len(self.problems)} problem(s)")
        found = [] if self.found is None else found_lines(self.found)
        return [head] + found + [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]


def found_lines(found: Discovered) -> list[str]:
    """Domains, classes (with their prompt words) and a class x domain table of image counts."""
    classes = found.class_order
    words = [prompt_name(c) for c in classes]
    total = sum(found.images(d) for d in found.domains)
    lines = [f"  {len(found.domains)} domain(s): {', '.join(found.domains)}",
             f"  {len(classes)} class(es): "
             + ", ".join(c if w == c else f"{c} ({w!r})" for c, w in zip(classes, words)),
             f"  images per domain and class ({total} in all):"]
    width = max([len("class"), len("total"), *map(len, classes)])
    cols = [max(len(d), 5) for d in found.domains]
    lines.append("    " + "class".ljust(width) + "".join(f"  {d:>{w}}" for d, w in zip(found.domains, cols)))
    for c in classes:
        row = [str(found.counts[d][c]) if c in found.counts[d] else "-" for d in found.domains]
        lines.append("    " + c.ljust(width) + "".join(f"  {n:>{w}}" for n, w in zip(row, cols)))
    totals = [str(found.images(d)) for d in found.domains]
    lines.append("    " + "total".ljust(width) + "".join(f"  {n:>{w}}" for n, w in zip(totals, cols)))
    return lines


def verify_discovered(info: DatasetInfo, hf: HFSource | None = None) -> CopyReport:
    """What a folder or Hugging Face dataset holds, and every problem that keeps it from being used."""
    if hf is not None:
        table, found = discover_hf(hf)
        notes = list(table.notes)
        if not info.own:
            notes.append(f"{info.name} is in the registry: when training, the values are matched to its "
                         f"domains {list(info.domains)} and classes")
    else:
        scan = scan_folder(Path(info.folder))
        found, notes = discover_folder(scan), skip_note(scan)
        return CopyReport(info.name, found.where, found.problems() + undecodable(scan), notes, found.counts, found)
    return CopyReport(info.name, found.where, found.problems(), notes, found.counts, found)


def undecodable(scan, domains=None) -> list[str]:
    """The files counted as images (by their name) that do not open as one: a text or HTML page
    saved as `.png` (an interrupted download, a Git LFS pointer) counts as an image otherwise.
    Each file's header is read and checked (`PIL.Image.verify`), not every pixel decoded."""
    from PIL import Image

    bad = []
    for domain in domains if domains is not None else scan.domains:
        for cls in scan.classes(domain):
            for rel in scan.files[domain][cls]:
                try:
                    with Image.open(scan.dataset_dir / rel) as image:
                        image.verify()
                except Exception as error:  # noqa: BLE001 - any failure to read it is the finding
                    bad.append((rel, f"{type(error).__name__}: {error}"))
    if not bad:
        return []
    return [f"{len(bad)} file(s) named as images do not decode (e.g. {bad[0][0]}: {bad[0][1]}; "
            f"all: {[rel for rel, _ in bad[:10]]}{'...' if len(bad) > 10 else ''})"]


def verify_copy(info: DatasetInfo, dataset_dir: Path) -> CopyReport:
    report = CopyReport(info.name, str(dataset_dir))
    if not dataset_dir.is_dir():
        report.problems.append(f"{dataset_dir} does not exist")
        return report
    scan = scan_folder(dataset_dir)
    found = scan.domains
    missing = [d for d in info.domains if d not in found]
    extra = [d for d in found if d not in info.domains]
    if missing:
        report.problems.append(f"missing domain folder(s) {missing}")
    if extra:
        report.notes.append(f"extra folder(s) {extra}, not a domain of {info.name}: ignored")
    for domain in (d for d in info.domains if d in found):
        classes = scan.classes(domain)
        lacking = sorted(set(info.classes) - set(classes))
        surplus = sorted(set(classes) - set(info.classes))
        empty = [c for c in classes if c in info.classes and not scan.files[domain][c]]
        if lacking:
            report.problems.append(f"{domain}: missing class folder(s) {lacking[:10]} ({len(lacking)} in all)")
        if surplus:
            report.problems.append(f"{domain}: extra class folder(s) {surplus[:10]} ({len(surplus)} in all)")
        if empty:
            report.problems.append(f"{domain}: empty class folder(s) {empty[:10]} ({len(empty)} in all)")
        report.counts[domain] = {c: len(scan.files[domain][c]) for c in classes}
        n, expected = sum(report.counts[domain].values()), info.counts.get(domain)
        if expected is not None and n != expected:
            more_or_less = f"{n - expected} extra" if n > expected else f"{expected - n} missing"
            report.problems.append(f"{domain}: {n} images, expected {expected} ({more_or_less})")
        report.problems += _class_count_problems(domain, report.counts[domain], info.class_counts.get(domain, {}))
    report.problems += undecodable(scan, [d for d in info.domains if d in found])
    if scan.skipped:
        report.notes.append(f"{len(scan.skipped)} non-image file(s), skipped when training (e.g. {scan.skipped[:3]})")
    if info.counts_source:
        report.notes.append(f"expected counts: {info.counts_source}")
    return report


def _class_count_problems(domain: str, found: dict[str, int], expected: dict[str, int], shown: int = 10) -> list[str]:
    """Classes whose image count differs from the registry's (present class folders only: a missing
    folder is reported as such); the first `shown`, then how many more."""
    wrong = [f"{domain}/{c}: {found[c]} images, expected {n}" for c, n in expected.items()
             if c in found and found[c] and found[c] != n]
    more = [f"{domain}: {len(wrong) - shown} more class(es) with other counts"] if len(wrong) > shown else []
    return wrong[:shown] + more


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(archive: Archive, downloads: Path, say=print) -> Path:
    """Fetch one archive into `downloads` (resuming a `.part` file) and check its sha256."""
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / archive.url.rstrip("/").split("/")[-1]
    if not target.exists():
        part = target.with_name(target.name + ".part")
        done = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(archive.url, headers={"Range": f"bytes={done}-"} if done else {})
        say(f"downloading {archive.url}" + (f" (resuming at {done} bytes)" if done else ""))
        try:
            with urllib.request.urlopen(request, timeout=60) as response, open(part, "ab" if done else "wb") as out:
                if done and getattr(response, "status", 206) != 206:  # the server ignored the range
                    out.truncate(0)
                shutil.copyfileobj(response, out, CHUNK)
        except OSError as error:
            raise DGHeadsError(f"cannot download {archive.url}: {error}; run again to resume") from None
        part.replace(target)
    actual = sha256_of(target)
    if archive.sha256 is None:
        say(f"note: {target.name} has no published checksum; its sha256 is {actual}")
    elif actual != archive.sha256:
        target.replace(target.with_name(target.name + ".bad"))
        raise DGHeadsError(f"{archive.url}: sha256 {actual} != expected {archive.sha256}; the file was "
                           f"moved to {target.name}.bad and nothing was unpacked")
    return target


def unpack(archive_file: Path, dataset_dir: Path, strip: str = "") -> None:
    """Unpack into a temporary sibling, then move each top-level entry into the dataset folder."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=dataset_dir.parent) as tmp:
        name = archive_file.name
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive_file) as z:
                z.extractall(tmp)
        elif name.endswith((".tar", ".tar.gz", ".tgz")):
            with tarfile.open(archive_file) as t:
                t.extractall(tmp, filter="data")
        else:
            raise DGHeadsError(f"cannot unpack {archive_file}: expected .zip, .tar or .tar.gz")
        top = Path(tmp) / strip
        for entry in sorted(top.iterdir()):
            destination = dataset_dir / entry.name
            if destination.exists():
                shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
            shutil.move(str(entry), destination)


def prepare(info: DatasetInfo, root: Path, say=print, hf: HFSource | None = None) -> CopyReport:
    """Download what can be downloaded, or say how to get it; then verify the copy. A dataset of
    one's own, or a Hugging Face source: say what it holds and what is wrong with it."""
    if info.own or hf is not None:
        return verify_discovered(info, hf)
    dataset_dir = root / info.folder
    if info.builtin:
        rotated_digits.build(dataset_dir)
    elif not info.archives:
        if not dataset_dir.is_dir():
            say(f"{info.name} has no stable download. {manual_steps(info)}")
    else:
        for archive in info.archives:
            if archive.provides and (dataset_dir / archive.provides).is_dir():
                continue  # unpacked by an earlier run (the move into place is atomic)
            unpack(download(archive, root / ".downloads", say), dataset_dir, archive.strip)
    return verify_copy(info, dataset_dir)


# ------------------------------------------------------------------ image-caption (retrieval) data
CAPTION_SPLITS = ("train", "val", "test")


@dataclass
class CaptionReport:
    """What each split of a caption dataset holds; `ok` when its image counts are the registry's
    (where tabulated). A split that cannot be used (no caption column, empty, its first image
    unreadable) is an error, not a problem listed here."""

    dataset: str
    where: str
    splits: dict[str, dict] = field(default_factory=dict)  # split -> images, captions, how
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    registered: bool = True  # in the registry (its counts checked), else one's own

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        verdict = "complete" if self.registered else "usable"
        head = f"{self.dataset} at {self.where}: " + (verdict if self.ok else f"{len(self.problems)} problem(s)")
        rows = [f"  {split}: {s['images']} images, {s['captions']} captions ({s['per_image']} per image)"
                for split, s in self.splits.items()]
        return [head, *rows] + [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]


def caption_cache(cache_dir: str | None) -> str:
    if cache_dir:
        return str(cache_dir)
    import datasets

    return str(datasets.config.HF_DATASETS_CACHE)


def prepare_captions(dataset: str, source=None, splits: list[str] | None = None, cache_dir: str | None = None,
                     say=print) -> CaptionReport:
    """Load every split of a caption dataset through `datasets` (online: downloading into the
    cache what it lacks; with HF_DATASETS_OFFLINE=1: from the cache only) and check it. A bad
    source (no caption column, an empty split) raises `DGHeadsError`."""
    import os

    from dg_heads.data.captions import MissingSplit, load_split, resolve

    name, source, info = resolve(dataset, source, "dataset")
    where = "built in (no download)" if source is None else source.describe()
    if source is not None:
        offline = os.environ.get("HF_DATASETS_OFFLINE", "") not in ("", "0") or \
            os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        say(f"{name}: reading {where} through Hugging Face datasets, cache {caption_cache(cache_dir)} "
            + ("(offline: the cache only)" if offline else "(downloading what the cache lacks)"))
    report, has = CaptionReport(name, where, registered=info is not None), ""
    for split in splits or CAPTION_SPLITS:
        try:
            loaded = load_split(name, source, split, name, cache_dir)
        except MissingSplit as missing:
            if splits:  # asked for by name
                raise
            # of the default three: a registry copy lacking one is incomplete; one's own data may have
            # only some (a test split alone serves `lightning test`)
            (report.problems if info is not None else report.notes).append(f"{split}: none ({missing.how})")
            has = missing.how
            continue
        counts = [len(c) for c in loaded.captions]
        per_image = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
        report.splits[split] = {"images": len(loaded), "captions": sum(counts), "per_image": per_image}
        try:
            loaded.reader.read(0)
        except Exception as error:  # noqa: BLE001 - any failure to decode it is the finding
            raise DGHeadsError(f"{split} split of {name}: its first image ({loaded.reader.describe(0)}) cannot be "
                               f"read: {type(error).__name__}: {error}") from None
        expected = info.images.get(split) if info is not None else None
        if expected is not None and expected != len(loaded):
            report.problems.append(f"{split}: {len(loaded)} images, expected {expected}")
    if not report.splits:
        raise DGHeadsError(f"caption dataset {name} ({where}) has none of the splits {list(CAPTION_SPLITS)} ({has}): "
                           f"name one with --split")
    if info is not None and info.counts_source:
        report.notes.append(f"expected counts: {info.counts_source}")
    return report
