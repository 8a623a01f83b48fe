"""Pretrained open_clip weights on clusters whose compute nodes have no network.

`dg-heads weights MODEL TAG` fetches a tag's weights into the cache open_clip reads (the Hugging
Face hub cache, or `~/.cache/clip` for tags only published at a URL) on a machine with network,
such as a cluster's login node, and prints where they are. A run then finds them there:
`create_clip` loads cached weights straight from their file, without asking the hub anything,
and stops at once with one line when they are not cached and there is no network, instead of
retrying the download for half a minute and failing deep inside jsonargparse.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import open_clip
from open_clip.pretrained import get_pretrained_cfg

from dg_heads.errors import DGHeadsError

HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"  # open_clip.constants, as open_clip looks them up
HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
TRUE = ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache that `hf_hub_download` (open_clip's download) uses in this process:
    huggingface_hub's own `constants.HF_HUB_CACHE` ($HF_HUB_CACHE, else $HF_HOME/hub, ...)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def url_cache_dir() -> Path:
    # hand-written: open_clip's `download_pretrained_from_url` default, which it exports no name for
    return Path("~/.cache/clip").expanduser()


def sources(model: str, tag: str) -> tuple[str | None, list[str], str | None]:
    """(hub repo, its candidate file names in open_clip's order of preference, URL) of a tag."""
    cfg = get_pretrained_cfg(model, tag)
    hub, url = cfg.get("hf_hub") or None, cfg.get("url") or None
    if hub is None:
        return None, [], url
    repo, filename = os.path.split(hub)
    filename = filename or HF_WEIGHTS_NAME
    names = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
    if filename != HF_WEIGHTS_NAME and filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return repo, [*names, filename], url


def cached_weights(model: str, tag: str) -> Path | None:
    """The file of a tag's weights if it is in the cache open_clip downloads to, else None."""
    repo, names, url = sources(model, tag)
    if repo is not None:
        from huggingface_hub import try_to_load_from_cache

        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=hub_cache_dir())
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        return None
    if url:
        target = url_cache_dir() / os.path.basename(urlparse(url).path)
        return target if target.is_file() else None
    return None


def offline_reason(model: str, tag: str, timeout: float = 3.0) -> str | None:
    """Why the weights cannot be downloaded from here, or None when the source answers."""
    repo, _, url = sources(model, tag)
    if repo is not None and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE:
        return "HF_HUB_OFFLINE is set"
    where = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if repo is not None else url
    parsed = urlparse(where or "")
    host, port = parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    if not host:
        return "no download source is known for it"
    reached: list[bool] = []

    def probe() -> None:  # in a thread: a name lookup without network can hang far longer than `timeout`
        try:
            with socket.create_connection((host, port), timeout=timeout):
                reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return None if reached else f"{host} cannot be reached"


def not_cached_offline(model: str, tag: str, reason: str) -> DGHeadsError:
    return DGHeadsError(
        f"pretrained weights {model} {tag!r} are not in the cache ({hub_cache_dir()}) and cannot be "
        f"downloaded here ({reason}): run `dg-heads weights {model} {tag}` on a machine with network "
        f"(a login node) that shares the cache, or set pretrained to a local weights file")


def cached_or_offline_error(model: str, tag: str) -> Path | None:
    """The tag's cached weights file, None when it must be downloaded (network here), or at once
    an error naming `dg-heads weights` when there is no network."""
    found = cached_weights(model, tag)
    if found is not None:
        return found
    reason = offline_reason(model, tag)
    if reason is not None:
        raise not_cached_offline(model, tag, reason)
    return None


def fetch(model: str, tag: str) -> Path:
    """The tag's weights file in the cache, downloaded (as open_clip would) if not there yet."""
    found = cached_or_offline_error(model, tag)
    if found is not None:
        return found
    from open_clip.pretrained import download_pretrained

    try:
        path = download_pretrained(get_pretrained_cfg(model, tag))
    except Exception as error:  # network errors, a moved file: say which weights and why
        raise DGHeadsError(f"could not download pretrained weights {model} {tag!r}: "
                           f"{type(error).__name__}: {error}") from None
    if not path or not Path(path).is_file():
        raise DGHeadsError(f"open_clip returned no weights file for {model} {tag!r}")
    return Path(path)


def weights(model: str, tag: str) -> None:
    """Fetch open_clip's pretrained weights for MODEL and TAG into the cache (on a machine with
    network, e.g. a cluster's login node) and print where they are; runs on machines without
    network then load them from there.

    Args:
        model: an open_clip model name, e.g. ViT-B-16
        tag: a pretrained tag of it, e.g. openai
    """
    from dg_heads.backbone import CLIPSpec, check_spec

    if tag.strip().lower() in ("", "none", "null") or "/" in tag:
        raise DGHeadsError(f"TAG {tag!r}: expected a pretrained tag of {model}, e.g. "
                           f"{open_clip.list_pretrained_tags_by_model(model)[:4]}")
    check_spec(CLIPSpec(model_name=model, pretrained=tag))
    was_cached = cached_weights(model, tag) is not None
    path = fetch(model, tag)
    print(f"{model} {tag}: {'already cached' if was_cached else 'downloaded'}: {path}")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    """`dg-heads weights MODEL TAG`."""
    from dg_heads.cli import run_tool

    run_tool(weights, argv, "dg-heads weights")
