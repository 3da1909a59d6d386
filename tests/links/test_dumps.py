"""Streaming dump readers: every compression, real compressor tools, chunk boundaries, damaged archives."""

from __future__ import annotations

import gzip
import subprocess

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from webtext.demo.dump import sample_lines, write_lines
from webtext.links import dumps
from webtext.links.dumps import DumpReadError, iter_lines

LINES = [
    b'{"id":"1","title":"caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x98\x80","url":"http://a.com/"}',
    b"",
    b'{"id":"2","title":"' + "é".encode() * 5000 + b'"}',  # 10 kB of two-byte characters
    b'{"id":"3"}',
]
PAYLOAD = b"\n".join(LINES) + b"\n"

# suffix -> shell command compressing stdin to stdout, as the dumps are published. zstd reads a pipe, so the
# frame has no content size and declares the full 2^31-byte window, like the real monthly dumps.
TOOLS = {
    ".zst": "zstd -q --long=31 -3 -c",
    ".xz": "xz -c",
    ".bz2": "bzip2 -c",
    ".gz": "gzip -c",
}


def compress(data: bytes, suffix: str) -> bytes:
    if not suffix:
        return data
    return subprocess.run(TOOLS[suffix], shell=True, input=data, capture_output=True, check=True).stdout


@pytest.fixture(params=["", ".zst", ".xz", ".bz2", ".gz"])
def suffix(request):
    return request.param


def test_every_format_reads_back_every_line(tmp_path, suffix):
    path = tmp_path / f"RS.ndjson{suffix}"
    path.write_bytes(compress(PAYLOAD, suffix))
    assert list(iter_lines(str(path))) == LINES


def test_zstd_long_31_window(tmp_path):
    data = compress(PAYLOAD * 50, ".zst")
    assert zstandard.get_frame_parameters(data).window_size == 2 ** 31
    with pytest.raises(zstandard.ZstdError):  # a default decoder refuses such a frame: the test is real
        zstandard.ZstdDecompressor().decompressobj().decompress(data)
    path = tmp_path / "RS_2020-01.zst"
    path.write_bytes(data)
    assert list(iter_lines(str(path))) == LINES * 50


def test_sample_writer_makes_long_window_zstd(tmp_path):
    path = write_lines(str(tmp_path / "RS_2017-10.zst"), sample_lines(300, seed=1))
    with open(path, "rb") as f:
        assert zstandard.get_frame_parameters(f.read(18)).window_size == 2 ** 31
    assert list(iter_lines(path)) == list(sample_lines(300, seed=1))


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 4096])
def test_utf8_and_long_lines_survive_any_chunking(tmp_path, suffix, chunk):
    # Small chunks split multi-byte characters and make the 10 kB line span thousands of chunks.
    path = tmp_path / f"d.ndjson{suffix}"
    path.write_bytes(compress(PAYLOAD, suffix))
    got = list(iter_lines(str(path), chunk_bytes=chunk))
    assert got == LINES
    assert all(line.decode("utf-8") for line in got if line)


def test_line_far_longer_than_a_chunk(tmp_path):
    long_line = b'{"selftext":"' + b"x" * 3_000_000 + b'"}'
    path = tmp_path / "long.ndjson.zst"
    path.write_bytes(compress(b"a\n" + long_line + b"\nb\n", ".zst"))
    assert list(iter_lines(str(path), chunk_bytes=1024)) == [b"a", long_line, b"b"]


def test_last_line_without_newline_and_crlf(tmp_path):
    path = tmp_path / "d.ndjson"
    path.write_bytes(b'{"a":1}\r\n{"b":2}')
    assert list(iter_lines(str(path), chunk_bytes=3)) == [b'{"a":1}\r', b'{"b":2}']


def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(compress(b"", suffix))
    assert list(iter_lines(str(path))) == []


@pytest.mark.parametrize("suffix_", [".zst", ".xz", ".bz2", ".gz"])
def test_concatenated_streams(tmp_path, suffix_):
    # pbzip2, multi-member gzip and several zstd frames are all one file of consecutive streams
    path = tmp_path / f"cat{suffix_}"
    path.write_bytes(compress(b"one\ntwo\n", suffix_) + compress(b"three\n", suffix_))
    assert list(iter_lines(str(path), chunk_bytes=5)) == [b"one", b"two", b"three"]


def test_gzip_zero_padding_after_last_member(tmp_path):
    path = tmp_path / "pad.gz"
    path.write_bytes(gzip.compress(b"one\n") + b"\0" * 512)
    assert list(iter_lines(str(path))) == [b"one"]


@pytest.mark.parametrize("suffix_", [".zst", ".xz", ".bz2", ".gz"])
def test_truncated_archive_yields_good_lines_then_names_the_file(tmp_path, suffix_):
    lines = list(sample_lines(3000, seed=2, malformed_every=0))
    data = compress(b"\n".join(lines) + b"\n", suffix_)
    path = tmp_path / f"RS_2017-10{suffix_}"
    path.write_bytes(data[: len(data) * 2 // 3])
    got = []
    with pytest.raises(DumpReadError) as err:
        for line in iter_lines(str(path), chunk_bytes=4096):
            got.append(line)
    assert str(path) in str(err.value)
    assert err.value.path == str(path)
    assert err.value.lines == len(got)
    assert 0 < len(got) < len(lines)
    assert got == lines[: len(got)]  # every line before the damage, whole and in order


def test_corrupt_data_is_a_read_error(tmp_path):
    data = bytearray(compress(PAYLOAD * 20, ".gz"))
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DumpReadError, match="bad.gz"):
        list(iter_lines(str(path)))


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DumpReadError, match="nope.zst"):
        list(iter_lines(str(tmp_path / "nope.zst")))


def test_compression_of():
    assert dumps.compression_of("gs://b/RS_2019-01.zst") == ".zst"
    assert dumps.compression_of("RS_2011-01.BZ2") == ".bz2"
    assert dumps.compression_of("RS_v2_2005-06.xz") == ".xz"
    assert dumps.compression_of("RS_2019-01.ndjson") is None


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r"), max_size=40), max_size=30),
       chunk=st.integers(1, 50), fmt=st.sampled_from(["", ".zst", ".gz"]))
def test_any_text_any_chunking_round_trips(tmp_path_factory, lines, chunk, fmt):
    encoded = [line.encode("utf-8", "surrogatepass") for line in lines]
    data = b"".join(e + b"\n" for e in encoded)
    if fmt == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    elif fmt == ".gz":
        data = gzip.compress(data, mtime=0)
    path = tmp_path_factory.mktemp("h") / f"d{fmt}"
    path.write_bytes(data)
    assert list(iter_lines(str(path), chunk_bytes=chunk)) == encoded
