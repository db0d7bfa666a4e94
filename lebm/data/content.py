"""A cheap digest of what a DataModule reads, so a checkpoint knows the data's content, not only its settings.

Two copies of MNIST with the same settings can hold other examples (a copy whose test labels were
shifted, a folder filled from another source): the settings in a checkpoint's fingerprint
(:mod:`lebm.data.fingerprint`) cannot tell them apart. Every lebm DataModule therefore names what it
read, once set up (:meth:`content_sources`): the files (a list of paths) and the label arrays of its
splits (``{split: int64 tensor}``). :func:`data_content` reduces them to one digest:

- every label array, whole (dtype, shape and bytes);
- every file's name (relative to the data folder) and size;
- a fixed sample of the bytes of up to :data:`FILES_SAMPLED` files spread evenly over the sorted
  list: :data:`WINDOWS` windows of :data:`WINDOW_BYTES` bytes each, at the start, the end and evenly
  between.

So it reads a few kilobytes per file sampled whatever the files' size; the label arrays are in
memory already. The record, ``{"digest", "files", "bytes", "root"}``, goes into every checkpoint's
fingerprint and every test reading; two records hold the same content when their digests agree
(``root``, the folder the files were read from, is said, never compared: data may move).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from torch import Tensor

#: How many files have bytes sampled (evenly spread over the sorted list); every file's size counts.
FILES_SAMPLED = 64
#: Windows of bytes read from each sampled file: its start, its end and evenly between.
WINDOWS = 4
#: Bytes per window.
WINDOW_BYTES = 4096
#: Characters of the hexadecimal digest kept.
DIGEST_CHARS = 16
#: Where a set-up DataModule keeps its record (computed once: its files and labels do not change).
CACHE_ATTRIBUTE = "_lebm_data_content"


class ContentSources(NamedTuple):
    """What a set-up DataModule read: ``files`` (paths), ``labels`` (``{split: (N,) int tensor or
    None}``) and ``root`` (the data folder, said in messages; None: no files)."""

    files: list[Path]
    labels: Mapping[str, Tensor | None]
    root: Path | None


def located_files(found: Any) -> list[Path]:
    """The files a dataset's ``locate(root, split)`` returned (a path, a folder's files, or a
    list/tuple/dict of them), as sorted absolute paths without repeats."""
    paths: set[Path] = set()
    pending: list[Any] = [found]
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            pending.extend(item)
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item).resolve()
            if path.is_dir():
                paths.update(child.resolve() for child in path.rglob("*") if child.is_file())
            elif path.is_file():
                paths.add(path)
    return sorted(paths)


def sampled_bytes(path: Path, size: int) -> bytes:
    """:data:`WINDOWS` windows of :data:`WINDOW_BYTES` bytes of the file at ``path`` (all of it
    when it is shorter than the windows together)."""
    with open(path, "rb") as handle:
        if size <= WINDOWS * WINDOW_BYTES:
            return handle.read()
        chunks = []
        last = size - WINDOW_BYTES
        for window in range(WINDOWS):
            handle.seek(last * window // (WINDOWS - 1))
            chunks.append(handle.read(WINDOW_BYTES))
        return b"".join(chunks)


def content_digest(files: Iterable[Path], labels: Mapping[str, Tensor | None], root: Path | None) -> dict[str, Any]:
    """``{"digest", "files", "bytes", "root"}`` of ``files`` and ``labels`` (see the module's
    docstring for what the digest covers)."""
    digest = hashlib.sha256()
    for split in sorted(labels):
        array = labels[split]
        if array is None:
            continue
        flat = array.detach().cpu().contiguous().reshape(-1)
        digest.update(f"labels {split} {flat.dtype} {flat.numel()}\n".encode())
        digest.update(flat.numpy().tobytes())
    ordered = sorted(Path(path) for path in files)
    sizes = [path.stat().st_size for path in ordered]
    base = Path(os.path.commonpath([str(path.parent) for path in ordered])) if ordered else None
    for path, size in zip(ordered, sizes, strict=True):
        name = path.relative_to(base).as_posix() if base is not None else path.name
        digest.update(f"file {name} {size}\n".encode())
    step = max(1, -(-len(ordered) // FILES_SAMPLED))
    for index in range(0, len(ordered), step):
        digest.update(sampled_bytes(ordered[index], sizes[index]))
    folder = root if root is not None else base
    return {
        "digest": digest.hexdigest()[:DIGEST_CHARS],
        "files": len(ordered),
        "bytes": sum(sizes),
        "root": None if folder is None else str(Path(folder).resolve()),
    }


def data_content(datamodule: Any) -> dict[str, Any] | None:
    """The content record of a set-up DataModule (:func:`content_digest` of its
    :meth:`content_sources`), computed once per module; None for a module that names no sources
    (a user's DataModule without ``content_sources``, data drawn from its settings alone) or that
    has not been set up (its method returns None)."""
    if datamodule is None:
        return None
    cached = getattr(datamodule, CACHE_ATTRIBUTE, None)
    if cached is not None:
        return dict(cached)
    sources = getattr(datamodule, "content_sources", None)
    found = sources() if callable(sources) else None
    if found is None:
        return None
    record = content_digest(found.files, found.labels, found.root)
    setattr(datamodule, CACHE_ATTRIBUTE, record)
    return dict(record)


def content_difference(trained: Mapping[str, Any] | None, here: Mapping[str, Any] | None) -> str | None:
    """How two content records differ, in words (None: the same digest, or either unknown):
    ``"content a1b2... read from /data/mnist in training, c3d4... from /copy/mnist here"``."""
    if not isinstance(trained, Mapping) or not isinstance(here, Mapping):
        return None
    old, new = trained.get("digest"), here.get("digest")
    if not isinstance(old, str) or not isinstance(new, str) or old == new:
        return None
    return (
        f"content digest {old} read from {trained.get('root') or 'no files'} in training, {new} read from "
        f"{here.get('root') or 'no files'} here"
    )


def data_read(datamodule: Any) -> dict[str, Any]:
    """``{"data_read": record}`` for a reading kept beside its numbers (the folder the data was read
    from and its content digest, :func:`data_content`); empty when the module names no sources."""
    record = data_content(datamodule)
    return {} if record is None else {"data_read": record}
