"""Importer defects found in review: media overwritten across sources, lossy names, HF metadata
ignored, rows that produced unloadable datasets, half-finished appends, BOMs, webdataset metadata."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.io.importers import _safe_name, import_data
from spacebind.io.inputs import load_input


def png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def shard(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def items(out: Path) -> dict[str, dict[str, str]]:
    return {it.id: it.fields for it in Dataset.load(out).iter_items()}


def test_append_with_id_prefix_keeps_each_sources_extracted_media(tmp_path: Path) -> None:
    for name, value in (("A", 255), ("B", 0)):  # same layout, different bytes
        shard(tmp_path / name / "train-000.tar", {"s0.png": png_bytes(value), "s0.txt": f"{name} image".encode()})
        (tmp_path / f"P{name}" / "chair").mkdir(parents=True)
        z = 1 if name == "A" else -1
        (tmp_path / f"P{name}" / "chair" / "c1.off").write_text(f"OFF\n3 1 0\n0 0 {z}\n1 0 {z}\n0 1 {z}\n3 0 1 2\n")
    import_data("webdataset", tmp_path / "A", tmp_path / "wds", id_prefix="A/")
    import_data("webdataset", tmp_path / "B", tmp_path / "wds", id_prefix="B/", append=True)
    wds = items(tmp_path / "wds")
    assert load_input("image", wds["A/train-000/s0"]["image"]).mean() == 255
    assert load_input("image", wds["B/train-000/s0"]["image"]).mean() == 0
    assert Path(wds["A/train-000/s0"]["image"]) == (tmp_path / "wds" / "media" / "image" / "A" / "train-000" / "s0.png").resolve()
    import_data("points", tmp_path / "PA", tmp_path / "pts", id_prefix="A/")
    import_data("points", tmp_path / "PB", tmp_path / "pts", id_prefix="B/", append=True)
    pts = items(tmp_path / "pts")
    assert load_input("point", pts["A/chair/c1"]["point"])[:, 2].tolist() == [1, 1, 1]
    assert load_input("point", pts["B/chair/c1"]["point"])[:, 2].tolist() == [-1, -1, -1]


def test_rows_skipped_as_duplicates_write_no_media(tmp_path: Path) -> None:
    shard(tmp_path / "A" / "train-000.tar", {"s0.png": png_bytes(255), "s0.txt": b"white"})
    shard(tmp_path / "B" / "train-000.tar", {"s0.png": png_bytes(0), "s0.txt": b"black"})
    import_data("webdataset", tmp_path / "A", tmp_path / "ds")
    report = import_data("webdataset", tmp_path / "B", tmp_path / "ds", append=True)
    assert report.added == 0 and "duplicate id" in report.skipped[0].why
    assert load_input("image", items(tmp_path / "ds")["train-000/s0"]["image"]).mean() == 255


def test_a_media_file_with_other_bytes_is_never_overwritten(tmp_path: Path) -> None:
    shard(tmp_path / "src" / "train-000.tar", {"s0.png": png_bytes(255), "s0.txt": b"white",
                                               "s1.png": png_bytes(9), "s1.txt": b"dark"})
    left = tmp_path / "ds" / "media" / "image" / "train-000"
    left.mkdir(parents=True)
    (left / "s0.png").write_bytes(b"left by an earlier import")
    (left / "s1.png").write_bytes(png_bytes(9))  # the same bytes: reused
    report = import_data("webdataset", tmp_path / "src", tmp_path / "ds")
    assert [(b.where, "already exists with other content" in b.why) for b in report.skipped] == [("train-000.tar:s0", True)]
    assert (left / "s0.png").read_bytes() == b"left by an earlier import"
    assert list(items(tmp_path / "ds")) == ["train-000/s1"]


def test_copy_gives_ids_that_sanitise_alike_their_own_files(tmp_path: Path) -> None:
    src = tmp_path / "src" / "cat"
    src.mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(src / "a b.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a_b.png")
    import_data("folder", tmp_path / "src", tmp_path / "ds", copy=True)
    ds = items(tmp_path / "ds")
    assert load_input("image", ds["cat/a b"]["image"]).mean() == 255
    assert load_input("image", ds["cat/a_b"]["image"]).mean() == 0
    assert Path(ds["cat/a_b"]["image"]).name == "a_b.png"  # an id that needs no change keeps its name


def test_safe_name_is_one_to_one() -> None:
    ids = ["cat/a b", "cat/a_b", "cat/a?b", "../x", "x", "/x", "", ".", "a/./b", "a/b"]
    names = [_safe_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert _safe_name("dog/1-100") == "dog/1-100" and ".." not in _safe_name("../x").split("/")


def hf_parquet(path: Path, columns: dict[str, list], features: dict[str, dict]) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(columns).replace_schema_metadata(
        {b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_hf_class_labels_become_class_names_and_caption_lists_their_first(tmp_path: Path) -> None:
    features = {"text": {"dtype": "string", "_type": "Value"},
                "label": {"names": ["dog", "rooster"], "_type": "ClassLabel"},
                "captions": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}}
    hf_parquet(tmp_path / "src" / "train-00000-of-00001.parquet",
               {"text": ["a dog barks", "a rooster crows", "unlabelled"], "label": [0, 1, -1],
                "captions": [["a dog barks", "barking"], ["a rooster crows", "cock-a-doodle"], []]}, features)
    import_data("hf", tmp_path / "src", tmp_path / "ds", label_column="label")
    ds = Dataset.load(tmp_path / "ds")
    assert [it.label for it in ds.iter_items()] == ["dog", "rooster", None] and ds.class_names == ["dog", "rooster"]
    report = import_data("hf", tmp_path / "src", tmp_path / "ds2", text_column="captions")
    assert [f["text"] for f in items(tmp_path / "ds2").values()] == ["a dog barks", "a rooster crows"]
    assert [b.why for b in report.skipped] == ["empty caption"]


def test_hf_bad_cells_are_named(tmp_path: Path) -> None:
    hf_parquet(tmp_path / "src" / "train.parquet", {"text": ["fine", "fine too"], "n": [1, 2]}, {})
    report = import_data("hf", tmp_path / "src", tmp_path / "ds", text_column="n")
    assert [(b.where, b.why) for b in report.skipped] == [
        ("train:0", "unreadable row (column 'n' holds a int value, not a caption string)"),
        ("train:1", "unreadable row (column 'n' holds a int value, not a caption string)")]
    # `datasets` never writes a class outside its ClassLabel: such a file contradicts its own metadata
    hf_parquet(tmp_path / "bad" / "train.parquet", {"text": ["fine", "fine too"], "label": [0, 7]},
               {"label": {"names": ["dog"], "_type": "ClassLabel"}})
    with pytest.raises(InputError, match=r"train.parquet.*row 1: column 'label' holds class 7; its ClassLabel has 1 names"):
        import_data("hf", tmp_path / "bad", tmp_path / "ds2", label_column="label")


def test_csv_blank_ids_are_skipped_and_ids_stripped(tmp_path: Path) -> None:
    (tmp_path / "caps.csv").write_text("id,caption\n x1 ,a dog barks\n  ,a cat meows\nx3,rain falls\n")
    report = import_data("csv", tmp_path / "caps.csv", tmp_path / "ds", id_column="id")
    assert [(b.where, b.why) for b in report.skipped] == [("caps.csv:3", "empty id in column 'id'")]
    assert list(items(tmp_path / "ds")) == ["x1", "x3"]


def test_folder_with_modality_text_stores_the_files_text(tmp_path: Path) -> None:
    (tmp_path / "notes" / "dog").mkdir(parents=True)
    (tmp_path / "notes" / "dog" / "n1.md").write_text("a dog barking loudly\n")
    import_data("folder", tmp_path / "notes", tmp_path / "ds", modality="text")
    assert items(tmp_path / "ds") == {"dog/n1": {"text": "a dog barking loudly"}}


def test_append_to_classes_without_a_list_keeps_every_label(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.jsonl").write_text(json.dumps({"id": "t0", "text": "hello", "label": "greeting"}) + "\n")
    (ds / "classes.json").write_text(json.dumps({"templates": ["a {}"]}))
    (tmp_path / "more.csv").write_text("caption,label\nbye,farewell\n")
    import_data("csv", tmp_path / "more.csv", ds, append=True, label_column="label")
    assert json.loads((ds / "classes.json").read_text()) == {"templates": ["a {}"]}
    assert Dataset.load(ds).class_names == ["farewell", "greeting"]


def test_bad_classes_json_fails_before_the_manifest_changes(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    manifest = json.dumps({"id": "t0", "text": "hello"}) + "\n"
    (ds / "manifest.jsonl").write_text(manifest)
    (ds / "classes.json").write_text(json.dumps({"classes": [{"label": "x"}]}))
    (tmp_path / "more.csv").write_text("caption,label\nbye,farewell\n")
    with pytest.raises(InputError, match="classes.json"):
        import_data("csv", tmp_path / "more.csv", ds, append=True, label_column="label")
    assert (ds / "manifest.jsonl").read_text() == manifest


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    (tmp_path / "caps.csv").write_text("\ufeffpath,caption\na.png,a dark square\n", encoding="utf-8")
    assert import_data("csv", tmp_path / "caps.csv", tmp_path / "ds", path_column="path").added == 1
    (tmp_path / "caps2.csv").write_text("\ufeffcaption,label\na dog barks,dog\n", encoding="utf-8")
    assert import_data("csv", tmp_path / "caps2.csv", tmp_path / "ds2").added == 1


def test_webdataset_metadata_json_does_not_hide_the_txt_caption(tmp_path: Path) -> None:
    meta = json.dumps({"url": "http://x", "width": 8}).encode()
    shard(tmp_path / "src" / "train-000.tar", {
        "k0.jpg": png_bytes(1), "k0.json": meta, "k0.txt": b"from txt",                        # img2dataset style
        "k1.jpg": png_bytes(2), "k1.json": json.dumps({"caption": "from json"}).encode(),
        "k2.txt": b"txt wins", "k2.json": json.dumps({"text": "json loses"}).encode(),
        "k3.jpg": png_bytes(3), "k3.json": meta})                                               # no caption: image only
    report = import_data("webdataset", tmp_path / "src", tmp_path / "ds")
    assert report.skipped == []
    ds = items(tmp_path / "ds")
    assert {k: f.get("text") for k, f in ds.items()} == {
        "train-000/k0": "from txt", "train-000/k1": "from json", "train-000/k2": "txt wins", "train-000/k3": None}
