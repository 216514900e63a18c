"""Drift references on disk: what one is (version, age, size), writing a refreshed one, finding the current one.

A reference is an ``.npz`` with ``embeddings``, ``quality_<feature>`` and optionally
``class_counts``. A refreshed reference (``sightline drift rebaseline``) also carries
``created_at``, ``version``, ``records``, ``window_s``, ``forced`` and ``reason`` as 0-d
arrays. ``<reference_dir>/current.json`` names the refreshed reference in use, so a
restart keeps it instead of silently going back to the committed daylight reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping, Optional

import numpy as np

CURRENT = "current.json"
# The committed reference carries no version; its content hash names it instead.
UNVERSIONED_PREFIX = "daylight-"


@dataclass(frozen=True)
class ReferenceInfo:
    path: Path
    version: str
    created_at: float  # unix time
    records: int


def describe(path: Path) -> ReferenceInfo:
    """Version, creation time and size of the reference at ``path``.

    A reference without ``created_at`` (the committed one) is dated by its file's
    modification time: when that reference was deployed, which is what its age means.
    """
    with np.load(path) as data:
        records = int(data["embeddings"].shape[0])
        version = str(data["version"]) if "version" in data.files else None
        created_at = float(data["created_at"]) if "created_at" in data.files else None
    if version is None:
        version = UNVERSIONED_PREFIX + _sha256(path)[:12]
    if created_at is None:
        created_at = path.stat().st_mtime
    return ReferenceInfo(path, version, created_at, records)


def new_version(directory: Path, now: float) -> str:
    """``rb-20261128T120000Z``; a second refresh within the same second gets ``-2``, ``-3`` ..."""
    base = "rb-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    version, n = base, 1
    while (directory / f"reference-{version}.npz").exists():
        n += 1
        version = f"{base}-{n}"
    return version


def write_reference(directory: Path, arrays: Mapping[str, np.ndarray], version: str,
                    created_at: float) -> ReferenceInfo:
    """Write ``reference-<version>.npz`` and point ``current.json`` at it, each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"reference-{version}.npz"
    _atomic_write(path, lambda out: np.savez(out, **arrays))
    pointer = {"path": str(path.resolve()), "version": version, "created_at": created_at}
    _atomic_write(directory / CURRENT, lambda out: out.write(json.dumps(pointer, indent=2).encode() + b"\n"))
    return describe(path)


def current_reference(directory: Path) -> Optional[Path]:
    """The reference ``current.json`` names, or None when no refresh was ever made here.

    Raises ``ValueError`` when ``current.json`` exists but cannot be followed.
    """
    pointer = directory / CURRENT
    try:
        data = json.loads(pointer.read_text())
        path = Path(data["path"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{pointer}: unreadable ({exc})") from exc
    if not path.is_absolute():
        path = directory / path
    if not path.exists() and (directory / path.name).exists():
        path = directory / path.name  # the directory moved (a volume mounted elsewhere)
    if not path.exists():
        raise ValueError(f"{pointer}: names {path}, which does not exist")
    return path


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
