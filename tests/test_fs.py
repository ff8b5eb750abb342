"""beam_ml.fs behaves the same on a local directory and on gs:// (a real GCS API on 127.0.0.1).

Every test runs twice: `root` is a fresh local directory (fast, unmarked) and a
fresh bucket on the emulator (marked integration).
"""
import gzip
import json
import os

import pytest

from beam_ml import fs


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.integration)])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_root")


def test_write_read_text_and_what_exists(root):
    path = fs.join(root, "a", "b.txt")
    assert not fs.exists(path) and not fs.is_file(path) and not fs.is_dir(fs.join(root, "a"))
    fs.write_text(path, "héllo\n")
    assert fs.read_text(path) == "héllo\n"
    assert fs.read_bytes(path) == "héllo\n".encode()
    assert fs.is_file(path) and fs.exists(path) and not fs.is_dir(path)
    assert fs.is_dir(fs.join(root, "a")) and fs.exists(fs.join(root, "a")) and not fs.is_file(fs.join(root, "a"))
    assert fs.is_dir(fs.join(root, "a") + "/")
    assert fs.size(path) == len("héllo\n".encode())


def test_json_roundtrip_and_overwrite_leaves_one_file(root):
    path = fs.join(root, "counts.json")
    fs.write_json(path, {"rows_in": 3, "names": ["a", "ü"]})
    fs.write_json(path, {"rows_in": 4})
    assert fs.read_json(path) == {"rows_in": 4}
    assert json.loads(fs.read_text(path)) == {"rows_in": 4}
    # No temporary file is left beside it.
    assert fs.list_dir(root) == ["counts.json"]


def test_match_expands_globs_at_call_time_files_only_sorted(root):
    for name in ["data/b.csv", "data/a.csv", "data/c.txt", "data/sub/d.csv", "other/e.csv"]:
        fs.write_text(fs.join(root, *name.split("/")), name)
    data = fs.join(root, "data")
    assert fs.match(fs.join(data, "*.csv")) == [fs.join(data, "a.csv"), fs.join(data, "b.csv")]
    assert fs.match(fs.join(data, "?.c*")) == [fs.join(data, "a.csv"), fs.join(data, "b.csv")]
    assert fs.match(fs.join(data, "**.csv")) == [fs.join(data, "a.csv"), fs.join(data, "b.csv"),
                                                 fs.join(data, "sub", "d.csv")]
    # No glob: the path itself when it is a file; directories never match.
    assert fs.match(fs.join(data, "a.csv")) == [fs.join(data, "a.csv")]
    assert fs.match(data) == []
    assert fs.match(fs.join(data, "*")) == [fs.join(data, n) for n in ("a.csv", "b.csv", "c.txt")]
    assert fs.match(fs.join(root, "missing", "*.csv")) == []
    fs.write_text(fs.join(data, "0.csv"), "new")
    assert fs.match(fs.join(data, "*.csv"))[0] == fs.join(data, "0.csv")


def test_open_read_decompresses_by_extension_raw_bytes_stay_compressed(root):
    path = fs.join(root, "rows.csv.gz")
    with fs.open_write(path) as f:  # AUTO: gzip by extension
        f.write(b"a,b\n1,2\n")
    assert fs.read_bytes(path)[:2] == b"\x1f\x8b"
    assert gzip.decompress(fs.read_bytes(path)) == b"a,b\n1,2\n"
    with fs.open_read(path) as f:
        assert f.read() == b"a,b\n1,2\n"
    with fs.open_read(path, fs.CompressionTypes.UNCOMPRESSED) as f:
        assert f.read(2) == b"\x1f\x8b"


def test_open_write_streams_a_larger_file(root):
    path = fs.join(root, "big.bin")
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with fs.open_write(path) as f:
        for _ in range(3):
            f.write(chunk)
    assert fs.size(path) == 3 * len(chunk)
    with fs.open_read(path) as f:
        f.seek(len(chunk) + 10)
        assert f.read(4) == chunk[10:14]


def test_list_dir_names_immediate_children(root):
    model = fs.join(root, "model")
    assert fs.list_dir(model) == []
    for name in ["1/saved_model.pb", "1/variables/variables.index", "2/saved_model.pb", "README"]:
        fs.write_text(fs.join(model, *name.split("/")), "x")
    assert fs.list_dir(model) == ["1", "2", "README"]
    assert fs.list_dir(model + "/") == ["1", "2", "README"]
    assert fs.list_dir(fs.join(model, "1")) == ["saved_model.pb", "variables"]
    assert fs.list_files(model) == [fs.join(model, "1", "saved_model.pb"),
                                    fs.join(model, "1", "variables", "variables.index"),
                                    fs.join(model, "2", "saved_model.pb"), fs.join(model, "README")]


def test_makedirs_then_write_into_it(root):
    d = fs.join(root, "x", "y")
    fs.makedirs(d)
    fs.makedirs(d)  # exists: fine
    fs.write_text(fs.join(d, "f"), "1")
    assert fs.is_dir(d) and fs.list_dir(d) == ["f"]


def test_delete_and_delete_tree_missing_is_fine(root):
    tree = fs.join(root, "tree")
    for name in ["a", "b/c", "b/d/e"]:
        fs.write_text(fs.join(tree, *name.split("/")), name)
    fs.write_text(fs.join(root, "tree2"), "a sibling sharing the name prefix survives")
    fs.delete(fs.join(tree, "a"))
    assert not fs.exists(fs.join(tree, "a")) and fs.list_dir(tree) == ["b"]
    fs.delete(fs.join(tree, "a"))
    fs.delete_tree(tree)
    assert not fs.exists(tree) and fs.list_files(tree) == []
    assert fs.read_text(fs.join(root, "tree2")).startswith("a sibling")
    fs.delete_tree(tree)
    fs.delete_tree(fs.join(root, "tree2"))
    assert not fs.exists(fs.join(root, "tree2"))


def test_copy_tree_within_and_across_filesystems(root, tmp_path):
    src = fs.join(root, "src")
    files = {"saved_model.pb": b"\x00\x01pb", "variables/variables.data-00000-of-00001": b"w" * 1000,
             "assets.extra/beam_ml.json": b'{"version": 1}', "x.gz": gzip.compress(b"raw")}
    for name, data in files.items():
        fs.write_bytes(fs.join(src, *name.split("/")), data)

    def tree(base):
        prefix = base.rstrip("/") + "/" if not fs.is_local(base) else os.path.join(base, "")
        return {p[len(prefix):].replace(os.sep, "/"): fs.read_bytes(p) for p in fs.list_files(base)}

    same = fs.join(root, "copy")
    written = fs.copy_tree(src, same)
    assert len(written) == 4 and tree(same) == files
    local = str(tmp_path / "downloaded")
    fs.copy_tree(src, local)
    assert tree(local) == files
    back = fs.join(root, "uploaded")
    fs.copy_tree(local, back)
    assert tree(back) == files
    with pytest.raises(FileNotFoundError, match="nothing"):
        fs.copy_tree(fs.join(root, "nothing"), fs.join(root, "y"))


def test_copy_and_rename_a_file(root):
    a, b, c = (fs.join(root, n) for n in ("a.txt", "d/b.txt", "c.txt"))
    fs.write_text(a, "A")
    fs.copy(a, b)
    assert fs.read_text(b) == "A" and fs.read_text(a) == "A"
    fs.write_text(c, "old")
    fs.rename(a, c)
    assert fs.read_text(c) == "A" and not fs.exists(a)


def test_missing_files_raise_file_not_found_naming_them(root):
    missing = fs.join(root, "nope.txt")
    for call in (fs.read_text, fs.read_json, fs.size, fs.open_read, fs.read_bytes):
        with pytest.raises(FileNotFoundError, match="nope.txt"):
            call(missing)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        fs.copy(missing, fs.join(root, "x"))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        fs.rename(missing, fs.join(root, "x"))


def test_join_and_is_local():
    assert fs.join("gs://b/out", "model", "1") == "gs://b/out/model/1"
    assert fs.join("gs://b/out/", "spec.json") == "gs://b/out/spec.json"
    assert fs.join("/tmp/out", "spec.json") == "/tmp/out/spec.json"
    assert fs.is_local("/tmp/x") and fs.is_local("out/x") and not fs.is_local("gs://b/x")


@pytest.mark.integration
def test_gcs_bucket_roots_and_missing_buckets(gcs_root):
    assert fs.is_dir(gcs_root) and fs.exists(gcs_root) and fs.list_dir(gcs_root) == []
    fs.write_text(gcs_root + "/a/b", "1")
    assert fs.list_dir(gcs_root) == ["a"] and fs.list_dir(gcs_root + "/") == ["a"]
    with pytest.raises(ValueError, match="whole bucket"):
        fs.delete_tree(gcs_root)
    assert not fs.is_dir("gs://no-such-bucket-x/a") and fs.match("gs://no-such-bucket-x/*.csv") == []
    assert fs.list_dir("gs://no-such-bucket-x/a") == []
