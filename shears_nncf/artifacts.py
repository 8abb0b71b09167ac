"""Stage outputs on disk: folders written atomically, each with a small JSON manifest.

Every stage writes into a temporary sibling folder and renames it into place only when it
succeeded, so an interrupted run never leaves a folder that looks complete. Nothing shears did not
write is replaced: an output that holds anything else is refused (`check_output`) unless the user
asked for `--overwrite`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from .errors import ShearsError

MANIFEST = "shears_manifest.json"
# What marks an output as a stage's own besides a folder's manifest: the file a folder filled in place holds
# before its manifest (an unfinished search's evaluations, a run's state), and the keys of a stage's JSON file.
_FOLDER_MARKS = {"evaluations.json": "search", "pipeline.json": "run"}
_FILE_KEYS = {"evaluate": ({"tasks", "average"}, {"perplexity", "seqlen"}), "bench": ({"cpu", "rows"},),
              "score": ({"line", "extracted", "correct"},)}


def written_by(path: str | os.PathLike) -> str | None:
    """The stage that wrote `path` (a folder by its manifest, a JSON or JSONL file by its keys), else None."""
    path = Path(path)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            stage = (_json_object(path / MANIFEST) or {}).get("stage")
            return stage if isinstance(stage, str) else None
        return next((stage for name, stage in _FOLDER_MARKS.items() if (path / name).is_file()), None)
    found = _json_object(path)
    return next((stage for stage, key_sets in _FILE_KEYS.items()
                 if found is not None and any(keys <= found.keys() for keys in key_sets)), None)


def _json_object(path: Path) -> dict | None:
    """A file's JSON object, or its first line's (JSONL); None when it is neither, or unreadable."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    for candidate in (text, text.partition("\n")[0]):
        try:
            found = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        return found if isinstance(found, dict) else None
    return None


def check_output(path: str | os.PathLike, stage: str | None, *, folder: bool = True, overwrite: bool = False,
                 flag: str = "--output") -> bool:
    """Refuse, before `stage` does any work, an output it would replace that holds what it did not write.

    Fine: nothing there, an empty folder or file, or what `stage` wrote itself (a rerun replaces it; with
    `stage` None, what any stage wrote). Anything else only with `overwrite`: returns whether it is such a
    foreign output, to be replaced. Never writes or removes anything."""
    path = Path(path)
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ShearsError(f"{flag} {path} is under {above}, which is a file; give a path in a folder")
    if not path.exists():
        return False
    if not folder and path.is_dir():
        raise ShearsError(f"{flag} {path} is a folder; this command writes a file there, give a file path "
                          f"such as {path / 'results.json'}")
    owner = written_by(path)
    empty = not any(path.iterdir()) if path.is_dir() else path.stat().st_size == 0
    if empty or (owner is not None and stage in (None, owner)):
        return False
    if overwrite:
        return True
    if owner is not None:
        held = f"holds the output of `shears {owner}`"
    elif path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        held = f"holds {listed}, which shears did not write"
    else:
        held = "is a file shears did not write"
    what = "folder" if folder else "file"
    raise ShearsError(f"{flag} {path} {held}; give --overwrite to replace it, or another {what}")


def clear_output(path: str | os.PathLike, stage: str, *, overwrite: bool = False) -> None:
    """For a stage that fills its folder in place (search, run): the guard, then what `--overwrite` allowed to be
    replaced is removed now, just before the stage writes (an atomic writer replaces it at the end instead)."""
    path = Path(path)
    if check_output(path, stage, overwrite=overwrite):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextmanager
def atomic_output_dir(path: str | os.PathLike, stage: str | None = None, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `path` when the block completes without error.

    An existing `path` is replaced only when `check_output` allows it for `stage` (checked on entry and again
    before the swap), so what shears did not write is never removed without `overwrite`."""
    path = Path(path)
    check_output(path, stage, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        check_output(path, stage, overwrite=overwrite)  # it may have changed while the stage ran
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(e, path)
        raise
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        path.rename(old / path.name)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)


@contextmanager
def published_once(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes `path` unless another process published `path` first.

    For caches whose folder is keyed by what it holds (a converted embedded model, a task folder named by its content
    digest): two processes filling the same one write the same files, so the first rename wins and the other's copy
    is dropped; a folder already published is never replaced under a reader, as `atomic_output_dir` would."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(e, path)
        raise
    try:
        tmp.rename(path)  # atomic; refused when `path` is there already
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not path.is_dir():
            raise


def _raise_if_disk_full(error: BaseException, path: Path) -> None:
    """ENOSPC, as an OSError or inside a library's own error (safetensors: `IoError(Os { code: 28, ... })`): one line."""
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
        raise ShearsError(f"the disk holding {path.parent} is full (no space left on device) while writing {path}; "
                          "nothing was left behind: free some space or give an --output on another disk, "
                          "and run the command again") from None


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


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A text file's content: a missing, unreadable or non-UTF-8 file is one ShearsError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ShearsError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ShearsError(f"{what} {path} is not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}); "
                          "save it as UTF-8") from None
    except OSError as e:
        raise ShearsError(f"cannot read {what} {path}: {e.strerror}") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path, what))
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
    if stage is not None:
        check_stage(folder, manifest, stage)
    return manifest


def check_stage(folder: str | os.PathLike, manifest: dict, stage: str) -> None:
    if manifest.get("stage") != stage:
        raise ShearsError(f"{folder} was written by stage {manifest.get('stage')!r}, expected a {stage!r} folder")


@dataclass(frozen=True)
class StageFolder:
    """A stage's folder read back: its path and manifest. Each stage's subclass (in the module that owns the format)
    names its `STAGE` and gives the manifest's fields as properties, so no other module reads a manifest key."""

    STAGE: ClassVar[str]
    path: Path
    manifest: dict

    @classmethod
    def read(cls, folder: str | os.PathLike):
        return cls(Path(folder), read_manifest(folder, stage=cls.STAGE))


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

