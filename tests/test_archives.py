"""Archive safety: nothing in a user's archive may escape, link, or inflate past the limits."""
import gzip
import io
import random
import re
import shutil
import stat
import struct
import subprocess
import tarfile
import time
import zipfile

import pytest

from chalicelib.core import archives

MIB = 1024 * 1024

LIMITS = archives.Limits(max_inflated_bytes=1_000_000, max_entries=100, max_compression_ratio=100)


def _tar(entries, mode="w:gz"):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name, kind, target=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _zip(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def test_finds_the_model_folder_in_tar_gz_tar_and_zip(tmp_path):
    nested = [_file("model/saved_model.pb"), _file("model/variables/variables.index")]
    assert archives.check(_tar(nested), LIMITS) == "model"
    assert archives.check(_tar([_file("saved_model.pb")], mode="w"), LIMITS) == ""
    assert archives.check(_zip([("saved_model.pb", b"x"), ("variables/v", b"y")]), LIMITS) == ""
    root = archives.extract(_tar(nested), tmp_path / "out", LIMITS)
    assert root == (tmp_path / "out" / "model").resolve()
    assert (root / "variables" / "variables.index").read_bytes() == b"x"


@pytest.mark.parametrize("name, words", [
    ("/etc/saved_model.pb", "absolute path"),
    ("model/../../escape", "contains '..'"),
    ("..", "contains '..'"),
    ("a\\b", "invalid name"),
])
def test_unsafe_names_are_refused(name, words, tmp_path):
    archive = _tar([_file("saved_model.pb"), _file(name)])
    with pytest.raises(archives.ArchiveError, match=words):
        archives.extract(archive, tmp_path / "out", LIMITS)
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_are_refused(kind, tmp_path):
    archive = _tar([_file("saved_model.pb"), _special("variables", kind, "/etc")])
    with pytest.raises(archives.ArchiveError, match="is a link"):
        archives.extract(archive, tmp_path / "out", LIMITS)


def test_device_files_are_refused():
    with pytest.raises(archives.ArchiveError, match="not a regular file"):
        archives.check(_tar([_file("saved_model.pb"), _special("dev", tarfile.CHRTYPE)]), LIMITS)


def test_zip_symlinks_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("saved_model.pb", b"x")
        link = zipfile.ZipInfo("variables")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc")
    buffer.seek(0)
    with pytest.raises(archives.ArchiveError, match="is a link"):
        archives.check(buffer, LIMITS)


def test_declared_size_over_the_limit_is_refused():
    with pytest.raises(archives.ArchiveError, match="inflates to more than"):
        archives.check(_tar([_file("saved_model.pb", b"\0" * 1_000_001)]), LIMITS)


def test_zip_that_lies_about_its_size_is_stopped_while_inflating(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("saved_model.pb", b"\0" * 2_000_000)
    data = bytearray(buffer.getvalue())
    # Rewrite the declared uncompressed size (local header and central directory) to 10 bytes.
    local = data.find(b"PK\x03\x04")
    data[local + 22:local + 26] = (10).to_bytes(4, "little")
    central = data.find(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    with pytest.raises(archives.ArchiveError, match="'saved_model.pb' inflates past the 10 bytes"):
        archives.extract(io.BytesIO(bytes(data)), tmp_path / "out", LIMITS)
    written = tmp_path / "out" / "saved_model.pb"
    assert not written.exists() or written.stat().st_size <= LIMITS.max_inflated_bytes


def test_too_many_entries_are_refused():
    entries = [_file("saved_model.pb")] + [_file(f"f{i}") for i in range(LIMITS.max_entries)]
    with pytest.raises(archives.ArchiveError, match="more than 100 entries"):
        archives.check(_tar(entries), LIMITS)


def test_archive_without_a_savedmodel_says_what_is_expected():
    with pytest.raises(archives.ArchiveError, match="no saved_model.pb"):
        archives.check(_tar([_file("model/readme.txt")]), LIMITS)


def test_two_savedmodels_or_a_deep_one_are_refused():
    with pytest.raises(archives.ArchiveError, match="more than one SavedModel"):
        archives.check(_tar([_file("a/saved_model.pb"), _file("b/saved_model.pb")]), LIMITS)
    with pytest.raises(archives.ArchiveError, match="nested too deep"):
        archives.check(_tar([_file("a/b/saved_model.pb")]), LIMITS)


def test_not_an_archive_and_truncated_archives_are_refused():
    with pytest.raises(archives.ArchiveError, match="not a tar, tar.gz or zip"):
        archives.check(io.BytesIO(b"{\"json\": true}"), LIMITS)
    whole = _tar([_file("saved_model.pb", b"y" * 5000)]).getvalue()
    with pytest.raises(archives.ArchiveError, match="damaged or truncated"):
        archives.check(io.BytesIO(whole[: len(whole) // 2]), LIMITS)


# A bomb is refused by its ratio, long before the (generous) inflated limit.
BOMB_LIMITS = archives.Limits(max_inflated_bytes=4096 * MIB, max_entries=100, max_compression_ratio=100)


def gzip_bomb(mebibytes: int) -> bytes:
    """The issue's bomb: a tar.gz of a SavedModel whose variables are `mebibytes` MiB of zeros, at
    about 1 KB per MiB. Gzip members may be concatenated, so one MiB's member, repeated, is the data."""
    saved_model = tarfile.TarInfo("model/saved_model.pb")
    saved_model.size = 1
    variables = tarfile.TarInfo("model/variables/variables.data-00000-of-00001")
    variables.size = mebibytes * MIB
    head = saved_model.tobuf() + b"x".ljust(512, b"\0") + variables.tobuf()
    return gzip.compress(head) + gzip.compress(bytes(MIB), 9) * mebibytes + gzip.compress(bytes(1024))


def _inflated_when_refused(error: pytest.ExceptionInfo) -> int:
    return int(re.search(r"\((\d+) bytes from", str(error.value)).group(1))


def test_a_gzip_bomb_is_refused_at_check_quickly_with_its_ratio():
    bomb = gzip_bomb(600)
    assert len(bomb) < 700_000  # 600 KB that inflates to 600 MiB
    started = time.monotonic()
    with pytest.raises(archives.ArchiveError, match=r"inflates \d+ times its compressed size.*ratio of 100") as refused:
        archives.check(io.BytesIO(bomb), BOMB_LIMITS)
    assert time.monotonic() - started < 5  # it took 24 s of API time before
    assert _inflated_when_refused(refused) < 2 * archives.RATIO_GRACE_BYTES  # a few MiB inflated, not 600


def test_a_gzip_bomb_writes_little_before_extraction_stops(tmp_path):
    with pytest.raises(archives.ArchiveError, match="ratio of 100"):
        archives.extract(io.BytesIO(gzip_bomb(600)), tmp_path / "out", BOMB_LIMITS)
    written = sum(path.stat().st_size for path in (tmp_path / "out").rglob("*") if path.is_file())
    assert written < 2 * archives.RATIO_GRACE_BYTES


def test_a_zip_bomb_with_honest_headers_is_refused_by_its_ratio():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("saved_model.pb", b"x")
        archive.writestr("variables/variables.data-00000-of-00001", bytes(64 * MIB))
    buffer.seek(0)
    with pytest.raises(archives.ArchiveError, match="ratio of 100") as refused:
        archives.check(buffer, BOMB_LIMITS)
    assert _inflated_when_refused(refused) < 48 * MIB


def test_an_archive_below_the_ratio_or_the_grace_passes():
    noise = random.Random(1).randbytes(12 * MIB)  # incompressible, as float weights nearly are
    zeros = bytes(archives.RATIO_GRACE_BYTES // 2)  # compresses 1000 times, but is small
    archive = _tar([_file("saved_model.pb"), _file("variables/a", noise), _file("variables/b", zeros)])
    assert archives.check(archive, BOMB_LIMITS) == ""


@pytest.mark.parametrize("kind, words", [
    (stat.S_IFIFO, "is a fifo"),
    (stat.S_IFCHR, "is a character device"),
    (stat.S_IFBLK, "is a block device"),
    (stat.S_IFSOCK, "is a socket"),
])
def test_zip_entries_with_special_mode_bits_are_refused(kind, words):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("saved_model.pb", b"x")
        special = zipfile.ZipInfo("variables/variables.index")
        special.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
        special.external_attr = (kind | 0o644) << 16
        archive.writestr(special, b"")
    buffer.seek(0)
    with pytest.raises(archives.ArchiveError, match=f"'variables/variables.index' {words}.*only regular files"):
        archives.check(buffer, LIMITS)


def _one_entry_zip(data: bytes) -> bytearray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("saved_model.pb", data)
    return bytearray(buffer.getvalue())


def _set_size(data: bytearray, header: bytes, offset: int, size: int) -> None:
    start = data.find(header)
    data[start + offset:start + offset + 4] = size.to_bytes(4, "little")


def test_a_zip_whose_central_directory_lies_about_a_size_is_refused():
    data = _one_entry_zip(b"\0" * 2_000_000)
    _set_size(data, b"PK\x01\x02", 24, 10)  # the central directory's uncompressed size only
    with pytest.raises(archives.ArchiveError, match="'saved_model.pb' declares size 2000000 in its local header "
                                                   "but 10 in the central directory"):
        archives.check(io.BytesIO(bytes(data)), LIMITS)


def test_a_zip_that_declares_more_than_its_data_holds_is_refused():
    data = _one_entry_zip(b"\0" * 1000)
    _set_size(data, b"PK\x03\x04", 22, 5000)
    _set_size(data, b"PK\x01\x02", 24, 5000)
    with pytest.raises(archives.ArchiveError, match="'saved_model.pb' holds 1000 bytes, not the 5000 its headers"):
        archives.check(io.BytesIO(bytes(data)), LIMITS)


def test_zip_entries_that_share_their_data_are_refused():
    data = bytes(_one_entry_zip(b"\0" * 100_000))
    central, end = data.find(b"PK\x01\x02"), data.find(b"PK\x05\x06")
    signature, disk, first, here, total, size, offset, comment = struct.unpack("<4s4H2LH", data[end:end + 22])
    doubled = struct.pack("<4s4H2LH", signature, disk, first, here * 2, total * 2, size * 2, offset, comment)
    overlapping = data[:end] + data[central:end] + doubled  # two central entries, one local entry
    with pytest.raises(archives.ArchiveError, match="may not overlap"):
        archives.check(io.BytesIO(overlapping), LIMITS)


def test_zip_methods_other_than_stored_and_deflate_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("saved_model.pb", b"x")
    buffer.seek(0)
    with pytest.raises(archives.ArchiveError, match="'saved_model.pb' uses compression method 12"):
        archives.check(buffer, LIMITS)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar writes the sparse archive")
def test_sparse_tar_entries_are_refused(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"x")
    with open(tmp_path / "model" / "holes", "wb") as sparse:
        sparse.truncate(8 * MIB)  # all hole: inflates without a byte behind it
        sparse.write(b"y")
    subprocess.run(["tar", "-czSf", str(tmp_path / "sparse.tar.gz"), "-C", str(tmp_path), "model"], check=True)
    with pytest.raises(archives.ArchiveError, match="'model/holes' is a sparse file"):
        archives.check(io.BytesIO((tmp_path / "sparse.tar.gz").read_bytes()), LIMITS)


@pytest.mark.parametrize("name", ["keras", "multi_io", "strings", "tf1_classify"])
def test_real_savedmodels_pass_with_the_configured_limits(name, model_dirs, tmp_path):
    import savedmodels

    limits = archives.configured_limits()
    for archive, root in ((savedmodels.tar_gz(model_dirs[name]), "model"),
                          (savedmodels.tar_gz(model_dirs[name], top=None), ""),
                          (savedmodels.zipped(model_dirs[name]), "")):
        assert archives.check(io.BytesIO(archive), limits) == root
        extracted = archives.extract(io.BytesIO(archive), tmp_path / f"{len(archive)}-{root}", limits)
        assert (extracted / "saved_model.pb").read_bytes() == (model_dirs[name] / "saved_model.pb").read_bytes()
