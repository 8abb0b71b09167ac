"""Stage outputs on disk: folders written atomically, each with a small JSON manifest.

Every stage writes into a temporary sibling folder and renames it into place only when it
succeeded, so an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import ShearsError

MANIFEST = "shears_manifest.json"


@contextmanager
def atomic_output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `path` when the block completes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        path.rename(old / path.name)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise ShearsError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShearsError(f"{what} {path} is not valid JSON: {e}") from None


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    write_json(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: str | os.PathLike, stage: str | None = None) -> dict:
    """Read a stage folder's manifest; `stage` checks the folder was written by that stage."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShearsError(f"folder {folder} does not exist")
    manifest = read_json(folder / MANIFEST, what="manifest")
    if stage is not None and manifest.get("stage") != stage:
        raise ShearsError(
            f"{folder} was written by stage {manifest.get('stage')!r}, expected a {stage!r} folder"
        )
    return manifest


def content_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, in sorted order).

    What keys a result to the inputs it was computed from: a rerun with an edited input does not reuse it."""
    path = Path(path)
    if not path.exists():
        raise ShearsError(f"{path} does not exist")
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()

