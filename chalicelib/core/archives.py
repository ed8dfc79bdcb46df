"""Safe reading of model archives (tar, tar.gz, zip of a SavedModel directory).

Archives come from users, so nothing in them is trusted: absolute paths, `..`, links, device
files, fifos and sparse files are refused, and every entry is inflated and measured, never taken
at its headers' word. Three limits bound what an archive may cost: the number of entries, the
inflated bytes of all files together, and the compression ratio (inflated over compressed bytes
read so far), checked as each chunk comes out of the decompressor so that a decompression bomb
stops after a few MiB of work instead of filling the disk (or the API's time) first. In a zip,
the local header of each entry must agree with the central directory, entries may not overlap,
and each must inflate to exactly its declared size and CRC-32. The same walk serves the API
(check: everything inflated, nothing written) and the model inspector (extract into a fresh
folder).
"""
from __future__ import annotations

import gzip
import io
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from chalicelib.core.settings import get_settings

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_CHUNK = 1024 * 1024
_TAR_BUFFER = 256 * 1024  # tarfile's reads from the (inflating) stream
# Below this many inflated bytes any ratio passes: a tiny model's tar (headers and zero padding
# to 10 KiB records) compresses over 100 times, and costs nothing to inflate.
RATIO_GRACE_BYTES = 8 * 1024 * 1024
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error)
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ZIP_ENCRYPTED, _ZIP_DATA_DESCRIPTOR = 0x1, 0x8  # general purpose flag bits
_ZIP64_EXTRA = 0x0001
_ZIP64_SIZE = 0xFFFFFFFF


class ArchiveError(ValueError):
    """The archive cannot be accepted; the message names the entry and what was expected."""


@dataclass(frozen=True)
class Limits:
    max_inflated_bytes: int  # all files' data together, as inflated
    max_entries: int
    max_compression_ratio: float  # inflated over compressed bytes, once past RATIO_GRACE_BYTES


def configured_limits() -> Limits:
    """The limits the settings give (the API's upload check and the scorer's extraction agree)."""
    settings = get_settings()
    return Limits(settings.max_inflated_bytes, settings.max_archive_entries, settings.max_compression_ratio)


@dataclass(frozen=True)
class _Entry:
    name: str
    is_dir: bool
    size: int  # as declared; the data is measured as it inflates
    chunks: Callable[[], Iterator[bytes]] | None  # the inflated data, checked as it comes


class _Ratio:
    """Inflated against compressed bytes so far, checked at every chunk the decompressor gives."""

    def __init__(self, limit: float):
        self.limit = limit
        self.compressed = 0
        self.inflated = 0

    def add(self, inflated: int) -> None:
        self.inflated += inflated
        if self.inflated > RATIO_GRACE_BYTES and self.inflated > self.limit * max(self.compressed, 1):
            raise ArchiveError(
                f"The archive inflates {self.inflated / max(self.compressed, 1):.0f} times its compressed size "
                f"({self.inflated} bytes from the first {self.compressed} compressed bytes, and not done); "
                f"the limit is a ratio of {self.limit:g}, so it is refused as a likely decompression bomb "
                "(a SavedModel's weights compress 1 to 3 times; an operator can raise the limit with "
                "TFBATCH_MAX_COMPRESSION_RATIO)."
            )


class _Counted:
    """The archive's bytes as read, counted on the compressed side of the ratio."""

    def __init__(self, fileobj: IO[bytes], ratio: _Ratio):
        self._fileobj, self._ratio = fileobj, ratio

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self._ratio.compressed += len(data)
        return data


class _Inflating:
    """A gzip stream read in bounded chunks, each checked against the ratio as it inflates: tarfile
    reads headers (even megabytes of pax header) through it, so no read escapes the check."""

    def __init__(self, fileobj: IO[bytes], ratio: _Ratio):
        self._gzip = gzip.GzipFile(fileobj=_Counted(fileobj, ratio), mode="rb")
        self._ratio = ratio

    def read(self, size: int = -1) -> bytes:
        data = self._gzip.read(_CHUNK if size is None or size < 0 else min(size, _CHUNK))
        self._ratio.add(len(data))
        return data


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


def _tar_entries(fileobj: IO[bytes], limits: Limits, compressed: bool) -> Iterator[_Entry]:
    source = _Inflating(fileobj, _Ratio(limits.max_compression_ratio)) if compressed else fileobj
    try:
        with tarfile.open(fileobj=source, mode="r|", bufsize=_TAR_BUFFER) as tar:
            for member in tar:
                name = _safe_name(member.name)
                if member.issym() or member.islnk():
                    raise ArchiveError(f"Archive entry {name!r} is a link; links are not accepted.")
                if not (member.isfile() or member.isdir()):
                    raise ArchiveError(f"Archive entry {name!r} is not a regular file or directory.")
                if member.issparse():  # its holes inflate without any compressed bytes behind them
                    raise ArchiveError(f"Archive entry {name!r} is a sparse file; write it as a regular file.")
                chunks = (lambda m=member, n=name: _tar_data(tar, m, n)) if member.isfile() else None
                yield _Entry(name, member.isdir(), member.size, chunks)
    except _DAMAGED as error:
        raise ArchiveError(f"The tar archive is damaged or truncated ({error}).") from None


def _tar_data(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> Iterator[bytes]:
    try:
        with tar.extractfile(member) as source:
            while chunk := source.read(_CHUNK):
                yield chunk
    except _DAMAGED as error:
        raise ArchiveError(f"Archive entry {name!r} is damaged or truncated ({error}).") from None


def _zip_entries(fileobj: IO[bytes], limits: Limits) -> Iterator[_Entry]:
    try:
        with zipfile.ZipFile(fileobj) as archive:
            infos = archive.infolist()
    except _DAMAGED as error:
        raise ArchiveError(f"The zip archive is damaged or truncated ({error}).") from None
    if len(infos) > limits.max_entries:
        raise ArchiveError(f"The archive has more than {limits.max_entries} entries.")
    starts = {id(info): _zip_data_start(fileobj, info) for info in infos}
    _refuse_overlaps(infos, starts, fileobj.seek(0, 2))
    ratio = _Ratio(limits.max_compression_ratio)
    for info in infos:
        name = _safe_name(info.filename.rstrip("/") or info.filename)
        _refuse_special_mode(name, info.external_attr >> 16)
        chunks = None if info.is_dir() else (
            lambda i=info, n=name: _zip_data(fileobj, i, n, starts[id(i)], ratio))
        yield _Entry(name, info.is_dir(), info.file_size, chunks)


def _refuse_special_mode(name: str, mode: int) -> None:
    """Unix mode bits, where the zip has them: only regular files and directories (0: no type
    recorded, as Python's writestr and most non-Unix zippers leave it)."""
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"Archive entry {name!r} is a link; links are not accepted.")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        what = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a fifo",
                stat.S_IFSOCK: "a socket"}.get(kind, f"of file type {kind:#o}")
        raise ArchiveError(f"Archive entry {name!r} is {what} (mode {mode:#o}); only regular files and "
                           "directories are accepted.")


def _zip_data_start(fileobj: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where the entry's compressed data starts, once its local header is found to agree with the
    central directory (method and, unless a data descriptor follows the data, CRC and sizes):
    a reader that trusts the other header would see different data."""
    name = info.filename
    fileobj.seek(info.header_offset)
    header = fileobj.read(zipfile.sizeFileHeader)
    if len(header) < zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
        raise ArchiveError(f"Archive entry {name!r} has no local header where the central directory points.")
    (_, _, _, flags, method, _, _, crc, compressed, size, name_length,
     extra_length) = struct.unpack(zipfile.structFileHeader, header)
    local_name = fileobj.read(name_length)
    extra = fileobj.read(extra_length)
    if flags & _ZIP_ENCRYPTED or info.flag_bits & _ZIP_ENCRYPTED:
        raise ArchiveError(f"Archive entry {name!r} is encrypted; upload an unencrypted archive.")
    if method not in _ZIP_METHODS or method != info.compress_type:
        raise ArchiveError(f"Archive entry {name!r} uses compression method {method} (central directory: "
                           f"{info.compress_type}); only stored and deflate entries are accepted.")
    if local_name.decode("utf-8" if flags & 0x800 else "cp437", "replace") != info.orig_filename:
        raise ArchiveError(f"Archive entry {name!r} has another name in its local header "
                           f"({local_name.decode('utf-8', 'replace')!r}).")
    if not flags & _ZIP_DATA_DESCRIPTOR:
        size, compressed = _zip64_sizes(extra, size, compressed)
        declared = {"CRC-32": (crc, info.CRC), "compressed size": (compressed, info.compress_size),
                    "size": (size, info.file_size)}
        for field, (local, central) in declared.items():
            if local != central:
                raise ArchiveError(f"Archive entry {name!r} declares {field} {local} in its local header but "
                                   f"{central} in the central directory; the headers must agree.")
    return info.header_offset + zipfile.sizeFileHeader + name_length + extra_length


def _zip64_sizes(extra: bytes, size: int, compressed: int) -> tuple[int, int]:
    """The local header's sizes, from its zip64 extra field where the 32-bit fields say so."""
    if _ZIP64_SIZE not in (size, compressed):
        return size, compressed
    while len(extra) >= 4:
        kind, length = struct.unpack("<HH", extra[:4])
        if kind == _ZIP64_EXTRA and length >= 16:
            return struct.unpack("<QQ", extra[4:20])
        extra = extra[4 + length:]
    return size, compressed  # no zip64 field: compared as written, so they disagree


def _refuse_overlaps(infos: list[zipfile.ZipInfo], starts: dict[int, int], archive_size: int) -> None:
    """Each entry's compressed data must lie before the next entry's header: entries that share
    data (the "overlapping" zip bomb) inflate many times what the archive holds."""
    spans = sorted((info.header_offset, starts[id(info)] + info.compress_size, info.filename) for info in infos)
    for (_, end, name), (next_start, _, next_name) in zip(spans, spans[1:] + [(archive_size, 0, "")], strict=True):
        if end > next_start:
            overlapped = f"entry {next_name!r}" if next_name else "the end of the archive"
            raise ArchiveError(f"Archive entry {name!r} declares compressed data that runs into {overlapped}; "
                               "entries may not overlap.")


def _zip_data(fileobj: IO[bytes], info: zipfile.ZipInfo, name: str, start: int, ratio: _Ratio) -> Iterator[bytes]:
    """The entry's data, inflated from its raw bytes here (never past its declared size, whatever
    the stream holds) and checked against the declared size and CRC-32 at the end."""
    ratio.compressed += info.compress_size  # entries do not overlap, so this is what the archive holds
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if info.compress_type == zipfile.ZIP_DEFLATED else None
    fileobj.seek(start)
    left, inflated, crc = info.compress_size, 0, 0
    try:
        while left:
            raw = fileobj.read(min(left, _CHUNK))
            if not raw:
                raise ArchiveError(f"Archive entry {name!r} is truncated: its compressed data ends early.")
            left -= len(raw)
            for chunk in _inflate(inflater, raw) if inflater else [raw]:
                inflated += len(chunk)
                if inflated > info.file_size:
                    raise ArchiveError(f"Archive entry {name!r} inflates past the {info.file_size} bytes its "
                                       "headers declare.")
                ratio.add(len(chunk))
                crc = zlib.crc32(chunk, crc)
                yield chunk
    except zlib.error as error:
        raise ArchiveError(f"Archive entry {name!r} is damaged ({error}).") from None
    if inflater and info.compress_size and (not inflater.eof or inflater.unused_data):
        raise ArchiveError(f"Archive entry {name!r} declares {info.compress_size} compressed bytes, but its "
                           "deflate stream " + ("ends before them." if inflater.eof else "goes on past them."))
    if inflated != info.file_size:
        raise ArchiveError(f"Archive entry {name!r} holds {inflated} bytes, not the {info.file_size} its "
                           "headers declare.")
    if crc != info.CRC:
        raise ArchiveError(f"Archive entry {name!r} fails its CRC-32 check (damaged or altered).")


def _inflate(inflater, raw: bytes) -> Iterator[bytes]:
    """Chunks of at most _CHUNK bytes from one read of compressed data: inflating with a bound
    keeps a few bytes that expand to gigabytes from ever being in memory at once. An empty chunk
    means the input is used up and nothing is pending."""
    chunk = inflater.decompress(raw, _CHUNK)
    while chunk:
        yield chunk
        chunk = inflater.decompress(inflater.unconsumed_tail, _CHUNK)


def _entries(fileobj: IO[bytes], limits: Limits) -> Iterator[_Entry]:
    head = fileobj.read(512)
    fileobj.seek(0)
    kind = archive_format(head)
    walk = _zip_entries(fileobj, limits) if kind == "zip" else _tar_entries(fileobj, limits, kind == "tar.gz")
    declared = 0
    for count, entry in enumerate(walk, start=1):
        if count > limits.max_entries:
            raise ArchiveError(f"The archive has more than {limits.max_entries} entries.")
        declared += entry.size
        if declared > limits.max_inflated_bytes:
            raise ArchiveError(
                f"The archive inflates to more than {limits.max_inflated_bytes} bytes "
                f"(passed at entry {entry.name!r})."
            )
        yield entry


def _contents(fileobj: IO[bytes], limits: Limits) -> Iterator[tuple[_Entry, Iterator[bytes]]]:
    """Each entry with its data, counted against the inflated limit as it comes (headers may lie
    about sizes; the data cannot). Each entry's data must be read before asking for the next."""
    inflated = 0

    def counted(entry: _Entry) -> Iterator[bytes]:
        nonlocal inflated
        for chunk in entry.chunks() if entry.chunks else ():
            inflated += len(chunk)
            if inflated > limits.max_inflated_bytes:
                raise ArchiveError(f"The archive inflates to more than {limits.max_inflated_bytes} bytes "
                                   f"(passed in entry {entry.name!r}).")
            yield chunk

    for entry in _entries(fileobj, limits):
        yield entry, counted(entry)


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
    """Inflate the whole archive without writing anything; return the SavedModel's folder inside it.

    Every byte is inflated because only the data can be measured: headers can declare any size,
    and a bomb is a bomb only once inflated (the ratio stops it early)."""
    names = []
    for entry, data in _contents(fileobj, limits):
        names.append(entry.name)
        for _ in data:
            pass
    return model_root(names)


def pack(directory: Path | str, top: str | None = "model") -> bytes:
    """A SavedModel directory as the tar.gz this module reads back: under one top-level folder
    (`top`), or at the archive's top (None). What the CLI, the benchmarks and tests upload."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(str(directory), arcname=top or ".")
    return buffer.getvalue()


def extract(fileobj: IO[bytes], destination: Path, limits: Limits) -> Path:
    """Extract into `destination` (which must be empty) and return the SavedModel directory."""
    destination = destination.resolve()
    names = []
    for entry, data in _contents(fileobj, limits):
        target = (destination / entry.name).resolve()
        if destination not in target.parents and target != destination:
            raise ArchiveError(f"Archive entry {entry.name!r} would be written outside the model folder.")
        names.append(entry.name)
        if entry.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as sink:
            for chunk in data:
                sink.write(chunk)
    root = model_root(names)
    return destination / root if root else destination
