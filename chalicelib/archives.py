"""Safe reading of model archives (tar, tar.gz, zip of a SavedModel directory).

Archives come from users, so nothing in them is trusted: absolute paths, `..`, links and
device files are refused, and sizes are checked against limits both as declared and as
actually inflated (a zip may lie about its sizes). The same walk serves the API (check only,
nothing written) and the model inspector (extract into a fresh folder).
"""
from __future__ import annotations

import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_CHUNK = 1024 * 1024
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error)


class ArchiveError(ValueError):
    """The archive cannot be accepted; the message names the entry and what was expected."""


@dataclass(frozen=True)
class Limits:
    max_inflated_bytes: int
    max_entries: int


@dataclass(frozen=True)
class _Entry:
    name: str
    is_dir: bool
    size: int
    open: Callable[[], IO[bytes]] | None


def archive_format(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    raise ArchiveError("The content is not a tar, tar.gz or zip archive of a SavedModel directory.")


def _safe_name(name: str) -> str:
    if not name or "\x00" in name or "\\" in name:
        raise ArchiveError(f"Archive entry {name!r} has an invalid name.")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ArchiveError(f"Archive entry {name!r} has an absolute path; entries must be relative.")
    if ".." in path.parts:
        raise ArchiveError(f"Archive entry {name!r} contains '..'; entries must stay inside the archive.")
    return str(path)


def _tar_entries(fileobj: IO[bytes]) -> Iterator[_Entry]:
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                name = _safe_name(member.name)
                if member.issym() or member.islnk():
                    raise ArchiveError(f"Archive entry {name!r} is a link; links are not accepted.")
                if not (member.isfile() or member.isdir()):
                    raise ArchiveError(f"Archive entry {name!r} is not a regular file or directory.")
                opener = (lambda m=member: tar.extractfile(m)) if member.isfile() else None
                yield _Entry(name, member.isdir(), member.size, opener)
    except _DAMAGED as error:
        raise ArchiveError(f"The tar archive is damaged or truncated ({error}).") from None


def _zip_entries(fileobj: IO[bytes]) -> Iterator[_Entry]:
    try:
        with zipfile.ZipFile(fileobj) as archive:
            for info in archive.infolist():
                name = _safe_name(info.filename.rstrip("/") or info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise ArchiveError(f"Archive entry {name!r} is a link; links are not accepted.")
                opener = None if info.is_dir() else (lambda i=info: archive.open(i))
                yield _Entry(name, info.is_dir(), info.file_size, opener)
    except _DAMAGED as error:
        raise ArchiveError(f"The zip archive is damaged or truncated ({error}).") from None


def _entries(fileobj: IO[bytes], limits: Limits) -> Iterator[_Entry]:
    head = fileobj.read(512)
    fileobj.seek(0)
    walk = _zip_entries if archive_format(head) == "zip" else _tar_entries
    declared = 0
    for count, entry in enumerate(walk(fileobj), start=1):
        if count > limits.max_entries:
            raise ArchiveError(f"The archive has more than {limits.max_entries} entries.")
        declared += entry.size
        if declared > limits.max_inflated_bytes:
            raise ArchiveError(
                f"The archive inflates to more than {limits.max_inflated_bytes} bytes "
                f"(passed at entry {entry.name!r})."
            )
        yield entry


def model_root(names: list[str]) -> str:
    """The folder inside the archive that holds saved_model.pb ('' for the archive's top)."""
    folders = {
        "" if str(path.parent) == "." else str(path.parent)
        for path in map(PurePosixPath, names)
        if path.name in SAVED_MODEL_FILES
    }
    if not folders:
        raise ArchiveError(
            "The archive holds no saved_model.pb: upload a tar.gz or zip of a SavedModel directory "
            "(the folder written by tf.saved_model.save or model.export)."
        )
    depth = min(len(PurePosixPath(folder).parts) for folder in folders)
    shallowest = sorted(folder for folder in folders if len(PurePosixPath(folder).parts) == depth)
    if len(shallowest) > 1:
        raise ArchiveError(f"The archive holds more than one SavedModel ({', '.join(map(repr, shallowest))}).")
    if depth > 1:
        raise ArchiveError(
            f"saved_model.pb is nested too deep ({shallowest[0]!r}); put it at the archive's top "
            "or in one top-level folder."
        )
    return shallowest[0]


def check(fileobj: IO[bytes], limits: Limits) -> str:
    """Walk the archive without writing anything; return the SavedModel's folder inside it."""
    return model_root([entry.name for entry in _entries(fileobj, limits)])


def extract(fileobj: IO[bytes], destination: Path, limits: Limits) -> Path:
    """Extract into `destination` (which must be empty) and return the SavedModel directory."""
    destination = destination.resolve()
    names = []
    inflated = 0
    for entry in _entries(fileobj, limits):
        target = (destination / entry.name).resolve()
        if destination not in target.parents and target != destination:
            raise ArchiveError(f"Archive entry {entry.name!r} would be written outside the model folder.")
        names.append(entry.name)
        if entry.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with entry.open() as source, open(target, "wb") as sink:
                while chunk := source.read(_CHUNK):
                    inflated += len(chunk)
                    if inflated > limits.max_inflated_bytes:
                        raise ArchiveError(f"The archive inflates to more than {limits.max_inflated_bytes} bytes.")
                    sink.write(chunk)
        except _DAMAGED as error:
            raise ArchiveError(f"Archive entry {entry.name!r} is damaged ({error}).") from None
    root = model_root(names)
    return destination / root if root else destination
