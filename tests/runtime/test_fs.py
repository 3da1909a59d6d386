"""The file-system layer: local paths go to the OS without Beam, and mean what Beam's FileSystems make of them."""

import pytest
from apache_beam.io.filesystems import FileSystems

from webtext.runtime import fs


def _tree(root):
    for path in ["w/x.parquet", "w/.tmp-1-x.parquet", "w/a/y", "w/a/.h", "w/a/b/z", "w/r-0001.json", "e/"]:
        p = root / path
        if path.endswith("/"):
            p.mkdir(parents=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(path.encode())


@pytest.mark.parametrize("pattern", [
    # the stages' own patterns, matched without Beam
    "w", "w/*", "w/.tmp-*", "w/r-*.json", "w/x.parquet", "e", "nowhere", "nowhere/*",
    # anything else, which goes to Beam: its answers, whatever they are
    "w/*/*", "w/*/*/*", "w/**", "w/**/*.parquet", "w/**.json", "w/r-[0-9]*.json", "w/?-0001.json",
    "w/a?y", "*/a/*", "w/", "w//*.parquet"])
def test_local_patterns_match_what_beam_matches(tmp_path, pattern):
    _tree(tmp_path)
    path = str(tmp_path / pattern) + ("/" if pattern.endswith("/") else "")
    if pattern == "w//*.parquet":
        path = str(tmp_path / "w") + "//*.parquet"
    beam = sorted(m.path for m in FileSystems.match([path])[0].metadata_list)
    assert fs.glob_or_empty(path) == beam
    if beam:
        assert fs.glob([path, path]) == beam
    else:
        with pytest.raises(FileNotFoundError, match="no file matches"):
            fs.glob(path)


def test_local_files_are_written_whole_renamed_and_deleted_like_beams(tmp_path):
    target = str(tmp_path / "new" / "deeper" / "f.json")
    fs.write_json(target, {"b": 1, "a": [1, 2]})  # directories made as needed, no temporary file left
    assert fs.read_json(target) == {"a": [1, 2], "b": 1}
    assert [p.name for p in (tmp_path / "new" / "deeper").iterdir()] == ["f.json"]
    assert fs.exists(target) and fs.size(target) == len(fs.read_bytes(target))
    other = str(tmp_path / "other")
    fs.write_atomic(other, b"replacement")
    fs.rename(other, target)  # replaces, as Beam's rename does on a local file system
    assert fs.read_bytes(target) == b"replacement" and not fs.exists(other)
    fs.makedirs(str(tmp_path / "new"))  # already there: fine
    fs.delete([str(tmp_path / "new")])  # a directory goes with everything in it
    assert not fs.exists(str(tmp_path / "new"))
    with pytest.raises(OSError):
        fs.delete([str(tmp_path / "new")])
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    with pytest.raises(OSError, match="delete failed"):  # every path is tried, the failure raised at the end
        fs.delete([str(a), str(tmp_path / "missing"), str(b)])
    assert not a.exists() and not b.exists()
    assert fs.join(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")
    assert fs.join("gs://bucket/root/", "/a/", "b") == "gs://bucket/root/a/b"
