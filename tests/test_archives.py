"""Archive safety: nothing in a user's archive may escape, link, or inflate past the limits."""
import io
import tarfile
import zipfile

import pytest

from chalicelib import archives

LIMITS = archives.Limits(max_inflated_bytes=1_000_000, max_entries=100)


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
    with pytest.raises(archives.ArchiveError):
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
