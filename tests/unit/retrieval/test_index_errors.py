"""A damaged search index is refused naming the file at fault (CheckpointError: rebuild it with
`spacebind index`), and its manifest cannot make it read files outside its directory; an unknown
index kind is an InputError listing the known kinds, for `mine` as for `index`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from typer.testing import CliRunner

from spacebind.cache.store import embed_dataset
from spacebind.cli import app
from spacebind.errors import CheckpointError, InputError
from spacebind.io.datasets import Dataset
from spacebind.retrieval.mining import IndexOptions, mine
from spacebind.search import build_index, load_index
from spacebind.space import Space

N, DIM = 12, 8
REBUILD = "rebuild the index with `spacebind index`"
KINDS = "expected one of flat, ivf, hnsw, pq, ivfpq"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A text dataset's embedding cache and its intact search index."""
    root = tmp_path_factory.mktemp("index")
    lines = [json.dumps({"id": f"t{i}", "split": "test", "text": str(i)}) for i in range(N)]
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = torch.randn(N, DIM, generator=torch.Generator().manual_seed(0))
    space = Space.from_encoders("toy", {"text": lambda xs: table[[int(x) for x in xs]]}, dim=DIM)
    data = Dataset.load(root)
    embed_dataset(space, data, root / "cache", progress=False)
    build_index(space, data, root / "index", cache_dir=root / "leaves", progress=False)
    return root / "cache", root / "index"


def _manifest(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        change(manifest)
        (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return damage


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(data)


def _remove(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


def _outside(name: str) -> Callable[[Path], None]:
    """Point the manifest's items at a valid items file `name` (relative to the index) outside the index."""
    def damage(root: Path) -> None:
        shutil.copy(root / "text.items.json", root / name)
        _manifest(lambda m: m["modalities"]["text"].__setitem__("items", name))(root)
    return damage


# (damage, the file named in the error, what it says about it)
ITEMS, SPACE, ENTRIES = "text.items.json", "'space' is not an object with name, dim", "'modalities' is not an object"
DAMAGED = {
    "faiss garbage": (_write("text.faiss", b"garbage" * 10), "text.faiss", "not a FAISS index"),
    "faiss missing": (_remove("text.faiss"), "text.faiss", "no such file"),
    "items missing": (_remove(ITEMS), ITEMS, "cannot read it"),
    "items garbage": (_write(ITEMS, b"{not json"), ITEMS, "not valid JSON"),
    "items not utf-8": (_write(ITEMS, b"\xff\xfe["), ITEMS, "not valid JSON"),
    "items shape": (_write(ITEMS, b'[{"x": 1}]'), ITEMS, 'not a list of items with "id" and "input"'),
    "items short": (_write(ITEMS, json.dumps([{"id": "t0", "input": "0"}]).encode()), "text.faiss",
                    f"holds {N} vectors of dim {DIM}, the manifest expects 1 of dim {DIM}"),
    "manifest garbage": (_write("manifest.json", b"{"), "manifest.json", "not valid JSON"),
    "manifest list": (_write("manifest.json", b"[]"), "manifest.json", "a JSON list, not an object"),
    "no modalities": (_manifest(lambda m: m.pop("modalities")), "manifest.json", ENTRIES),
    "entry a string": (_manifest(lambda m: m["modalities"].__setitem__("text", "text.faiss")), "manifest.json",
                       ENTRIES),
    "no space": (_manifest(lambda m: m.pop("space")), "manifest.json", SPACE),
    "dim a string": (_manifest(lambda m: m["space"].__setitem__("dim", str(DIM))), "manifest.json", SPACE),
    "no fingerprint": (_manifest(lambda m: m["space"].pop("fingerprint")), "manifest.json", SPACE),
    "items in the parent": (_outside("../outside.items.json"), "manifest.json",
                            "modalities.text.items is '../outside.items.json', not the name of a file in the index"),
    "index by absolute path": (_manifest(lambda m: m["modalities"]["text"].__setitem__("index", "/etc/hostname")),
                               "manifest.json", "modalities.text.index is '/etc/hostname', not the name of a file"),
}


def test_an_intact_index_loads(world: tuple[Path, Path]) -> None:
    index = load_index(world[1])
    assert index.modalities == ("text",) and len(index) == N


FILE_DAMAGE = ["faiss garbage", "faiss missing", "items missing", "items garbage", "items not utf-8", "items shape",
               "items short"]
NOT_WRITTEN = "missing, or not the file manifest.json was written with"


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_index_is_refused_naming_the_file(world: tuple[Path, Path], tmp_path: Path, case: str) -> None:
    """Checked against the manifest's checksums first; without them (an index built before they were
    recorded) each file's own checks name what is wrong with it."""
    damage, name, problem = DAMAGED[case]
    for checksums in (True, False):
        root = tmp_path / f"index-{checksums}"
        shutil.copytree(world[1], root)
        if not checksums:
            _manifest(lambda m: m["modalities"]["text"].pop("sha256"))(root)
        damage(root)
        with pytest.raises(CheckpointError) as caught:
            load_index(root)
        message = str(caught.value)
        if checksums and case in FILE_DAMAGE:
            name, problem = ("text.faiss", NOT_WRITTEN) if case.startswith("faiss") else (ITEMS, NOT_WRITTEN)
        assert message.startswith(f"{root / name}: {problem}") and message.endswith(REBUILD), message
        name, problem = DAMAGED[case][1:]


def test_a_flipped_byte_in_a_vector_or_a_stored_id_is_refused(world: tuple[Path, Path], tmp_path: Path) -> None:
    """FAISS reads such files without complaint (a score of 6.2 "cosine", or a row far out of range)."""
    size = (world[1] / "text.faiss").stat().st_size
    for offset in (40, size // 2, size - 9):  # a size field, a vector, near the end
        root = tmp_path / f"flip{offset}"
        shutil.copytree(world[1], root)
        data = bytearray((root / "text.faiss").read_bytes())
        data[offset] ^= 0x55
        (root / "text.faiss").write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match=f"text.faiss: {NOT_WRITTEN}"):
            load_index(root)


def test_a_missing_manifest_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a spacebind index: cannot read manifest.json"):
        load_index(tmp_path)


def test_an_unknown_index_kind_lists_the_known_ones(world: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"unknown index 'banana'; {KINDS}"):
        IndexOptions().for_kind("banana")
    from spacebind.cache.store import EmbeddingCache

    with pytest.raises(InputError, match=f"unknown index 'banana'; {KINDS}"):
        mine(EmbeddingCache.open(world[0]), "text", "text", index="banana", progress=False)  # type: ignore[arg-type]
    ran = CliRunner().invoke(app, ["mine", str(world[0]), "--seed", "text", "--target", "text", "--index", "banana",
                                   "--out", str(tmp_path / "mined"), "-q"])
    assert ran.exit_code == 2 and f"error: unknown index 'banana'; {KINDS}" in ran.output
    assert "Traceback" not in ran.output and not (tmp_path / "mined").exists()


def _rebuild_killed_at_the_manifest(space: Space, data: Dataset, root: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebuild the index at `root` with `space`, killed when its manifest is about to be written."""
    import spacebind.search as search_module

    real = search_module.write_json

    def killed_at_the_manifest(path: Path, payload: Any) -> None:
        if Path(path).name == "manifest.json":
            raise KeyboardInterrupt("killed")
        real(path, payload)

    monkeypatch.setattr(search_module, "write_json", killed_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        build_index(space, data, root, cache_dir=tmp_path / "leaves", progress=False)


def test_a_failed_rebuild_leaves_the_old_index_whole_and_a_foreign_directory_is_refused(
        world: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild that fails after writing a modality's files (here: at the manifest) used to leave the
    new files under the old manifest, which loaded and answered with the other build's items."""
    root = tmp_path / "index"
    shutil.copytree(world[1], root)
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    data = Dataset.load(world[1].parent)
    other = Space.from_encoders("other", {"text": lambda xs: torch.randn(len(xs), DIM)}, dim=DIM)
    _rebuild_killed_at_the_manifest(other, data, root, tmp_path, monkeypatch)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".index")]  # no staging left beside it
    assert len(load_index(root)) == N
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="is not empty and not a spacebind index"):
        build_index(other, data, foreign, cache_dir=tmp_path / "leaves", progress=False)
    assert (foreign / "mine.txt").read_text() == "keep me"


def test_a_rebuild_keeps_files_a_user_put_beside_the_index(world: tuple[Path, Path], tmp_path: Path) -> None:
    root = tmp_path / "index"
    shutil.copytree(world[1], root)
    (root / "NOTES.md").write_text("how I built it")
    data = Dataset.load(world[1].parent)
    table = torch.randn(N, DIM, generator=torch.Generator().manual_seed(1))
    other = Space.from_encoders("other", {"text": lambda xs: table[[int(x) for x in xs]]}, dim=DIM)
    build_index(other, data, root, cache_dir=tmp_path / "leaves", progress=False)
    assert (root / "NOTES.md").read_text() == "how I built it" and len(load_index(root, other)) == N


def test_an_index_whose_parent_cannot_hold_a_sibling_is_built_in_place(world: tuple[Path, Path], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A mount point, or a directory under a parent the user cannot write: no staging sibling, so the
    index is built in place, its old manifest removed first (a half-built index does not load)."""
    import spacebind.search as search_module

    root = tmp_path / "index"
    shutil.copytree(world[1], root)
    monkeypatch.setattr(search_module.os.path, "ismount", lambda path: Path(path) == root)
    data = Dataset.load(world[1].parent)
    other = Space.from_encoders("other", {"text": lambda xs: torch.randn(len(xs), DIM)}, dim=DIM)
    _rebuild_killed_at_the_manifest(other, data, root, tmp_path, monkeypatch)
    assert not (root / "manifest.json").exists()  # no manifest over a half-built index
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".index")]
    monkeypatch.undo()
    assert len(build_index(other, data, root, cache_dir=tmp_path / "leaves", progress=False)) == N
