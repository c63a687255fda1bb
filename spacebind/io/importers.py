"""Importers: common dataset layouts → a spacebind dataset directory (`manifest.jsonl` + `classes.json`).

Each format is one small generator in the `FORMATS` registry; it yields a `Row` per item (ids
derived from the source path or key) or a `Bad` naming the line, member or entry it skipped.
`import_data` checks the rows (files exist, captions not empty, ids unique), assigns splits and
writes the dataset. Media stay where they are (manifest paths relative to the dataset directory,
which `Dataset.load` accepts, `..` included) unless `copy=True`; tar members, in-table bytes and
`.off` meshes have no readable file of their own: formats extract them to a staging folder, and
only the files of kept rows move to `OUT/media/<modality>/<item id>` (the final, prefixed id), so a
skipped row or a second source never overwrites an existing item's media.
"""
from __future__ import annotations

import csv
import filecmp
import hashlib
import inspect
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from spacebind.errors import InputError
from spacebind.extras import require
from spacebind.io.datasets import CLASSES, MANIFEST, OUTSIDE_ROOT, SPLITS, parse_classes, read_info
from spacebind.io.files import atomic_path, write_json
from spacebind.modalities import MODALITIES
from spacebind.registry import Registry

MEDIA = "media"
EXTENSIONS: dict[str, str] = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"), "image"),
    **dict.fromkeys((".wav", ".flac", ".mp3", ".ogg"), "audio"),
    **dict.fromkeys((".npy", ".ply", ".xyz", ".off"), "point"),
    ".txt": "text",
}
SPLIT_NAMES = {"train": "train", "training": "train", "restval": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test"}
TEXT_COLUMNS = ("caption", "text")


@dataclass
class Row:
    """One item found in the source: `fields` maps modality → absolute path or text."""

    id: str
    where: str
    fields: dict[str, str]
    split: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Bad:
    """A skipped line, member or entry, and why."""

    where: str
    why: str


@dataclass(frozen=True)
class Context:
    """What every format may use: a staging folder for extracted files (`import_data` moves those of
    kept rows to `OUT/media/`) and a modality override."""

    staging: Path
    modality: str | None = None


@dataclass
class ImportReport:
    """What an import added: item counts per modality and split, and every skipped row."""

    out: Path
    added: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[Bad] = field(default_factory=list)


FORMATS: Registry[Iterator[Row | Bad]] = Registry("import format")
"""Every import format by name: `folder`, `points`, `csv`, `coco`, `webdataset`, `hf`."""


def split_of(name: str | None) -> str | None:
    """The spacebind split a source's split name stands for (`validation` → `val`), or None."""
    return SPLIT_NAMES.get(str(name).strip().lower()) if name is not None else None


def _modality(path: str, ctx: Context) -> str | None:
    return ctx.modality or EXTENSIONS.get(Path(path).suffix.lower())


def _off_vertices(path: Path) -> np.ndarray:
    """The vertices of an OFF mesh (`OFF` header, counts, then x y z lines; ModelNet's `OFF123 …` too)."""
    tokens = path.read_text(encoding="ascii", errors="strict").split()
    if not tokens or not tokens[0].startswith("OFF"):
        raise ValueError("no OFF header")
    rest = ([tokens[0][3:]] if len(tokens[0]) > 3 else []) + tokens[1:]
    n = int(rest[0])
    pts = np.asarray(rest[3:3 + 3 * n], dtype=np.float32).reshape(n, 3)
    if n == 0 or not np.isfinite(pts).all():
        raise ValueError(f"{n} vertices or non-finite values")
    return pts


def _media_fields(key: str, files: dict[str, Path], ctx: Context) -> dict[str, str]:
    """Modality → path or caption for one item's files; `.off` converted to `.npy` (staged), text files read."""
    out = {}
    for m, p in files.items():
        if m == "text":
            out[m] = p.read_text(encoding="utf-8").strip()
        elif p.suffix.lower() == ".off":
            target = ctx.staging / "point" / f"{key}.npy"
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, _off_vertices(p))
            out[m] = str(target)
        else:
            out[m] = str(p)
    return out


@FORMATS.register("folder", description="class-per-folder tree: root/[split/]<class>/<file>, modality by extension")
def import_folder(source: Path, ctx: Context, *, only: tuple[str, ...] = ()) -> Iterator[Row | Bad]:
    """Files under `source`; files sharing a path stem form one item. The first directory that
    is not a split name is the label; a directory named train/val/test (or validation…) sets the split."""
    if not source.is_dir():
        raise InputError(f"{source}: the folder format needs a directory")
    groups: dict[str, dict[str, Path]] = {}
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts):
            continue
        m = _modality(path.name, ctx)
        if m is None or (only and m not in only):
            yield Bad(str(rel), f"not a {' or '.join(only) or 'known media'} file (extensions: "
                                f"{', '.join(e for e, k in EXTENSIONS.items() if not only or k in only)})")
            continue
        key = rel.with_suffix("").as_posix()
        if m in groups.setdefault(key, {}):
            yield Bad(str(rel), f"a second {m} file for item {key!r} ({groups[key][m].name} kept)")
            continue
        groups[key][m] = path
    for key, files in groups.items():
        dirs = Path(key).parts[:-1]
        split = next((split_of(d) for d in dirs if split_of(d)), None)
        label = next((d for d in dirs if not split_of(d)), None)
        try:
            fields = _media_fields(key, files, ctx)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            yield Bad(", ".join(str(p.relative_to(source)) for p in files.values()), f"unreadable ({exc})")
            continue
        yield Row(key, str(next(iter(files.values())).relative_to(source)), fields, split, label)


@FORMATS.register("points", description="point-cloud folder (.npy/.ply/.xyz/.off), laid out like `folder`")
def import_points(source: Path, ctx: Context) -> Iterator[Row | Bad]:
    """A folder of point clouds (ModelNet's root/<class>/<split>/x.off too); `.off` vertices become `.npy`."""
    return import_folder(source, ctx, only=("point",))


def _column(header: list[str], name: str | None, defaults: tuple[str, ...], what: str, where: str) -> str | None:
    """The column `name` (an error if absent), or the first of `defaults` present (None if none)."""
    if name is not None:
        if name not in header:
            raise InputError(f"{where}: no {what} column {name!r}; columns are {', '.join(header)}")
        return name
    return next((c for c in defaults if c in header), None)


@FORMATS.register("csv", description="CSV/TSV with path and caption columns (AudioCaps, Clotho)")
def import_csv(source: Path, ctx: Context, *, path_column: str | None = None, text_column: str | None = None,
               label_column: str | None = None, split_column: str | None = None, id_column: str | None = None,
               media_root: Path | None = None, delimiter: str | None = None) -> Iterator[Row | Bad]:
    """Rows of a CSV (`,`) or TSV (`.tsv`: tab) file with a header. Paths are relative to
    `media_root` (default: the file's folder), modality by extension. Without `path_column` the
    column `path` is used if present, without `text_column` `caption` or `text`; ids are the
    `id_column`, else the path without extension, else `<file stem>-<line>`."""
    root = Path(media_root) if media_root is not None else source.parent
    sep = delimiter or ("\t" if source.suffix.lower() in (".tsv", ".tab") else ",")
    with source.open(encoding="utf-8-sig", newline="") as fh:  # -sig: Excel's byte-order mark is not part of the first column
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, None)
        if not header:
            raise InputError(f"{source}: empty file; expected a header line naming the columns")
        pc = _column(header, path_column, ("path",), "path", str(source))
        tc = _column(header, text_column, TEXT_COLUMNS, "text", str(source))
        if pc is None and tc is None:
            raise InputError(f"{source}: no path or text column (give path_column / text_column); columns are {', '.join(header)}")
        lc, sc, ic = (_column(header, c, (), what, str(source)) for c, what in
                      ((label_column, "label"), (split_column, "split"), (id_column, "id")))
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                yield Bad(f"{source.name}:{reader.line_num + 1}", f"unreadable row ({exc}); the rest of the file is skipped")
                return
            where = f"{source.name}:{reader.line_num}"
            if not values:
                continue  # a blank line
            if len(values) != len(header):
                yield Bad(where, f"{len(values)} fields; the header has {len(header)}")
                continue
            row = dict(zip(header, values))
            fields = {}
            if pc is not None:
                path = row[pc].strip()
                m = _modality(path, ctx)
                if m is None:
                    yield Bad(where, f"cannot tell the modality of {path!r} from its extension")
                    continue
                fields[m] = str(root / path)
            if tc is not None:
                fields["text"] = row[tc]
            item_id = row[ic].strip() if ic else Path(row[pc].strip()).with_suffix("").as_posix() if pc else f"{source.stem}-{reader.line_num}"
            if not item_id:
                yield Bad(where, f"empty id in column {ic!r}")
                continue
            raw_split = row[sc] if sc else None
            if raw_split is not None and split_of(raw_split) is None:
                yield Bad(where, f"split {raw_split!r} is not train, val or test")
                continue
            yield Row(item_id, where, fields, split_of(raw_split), row[lc] if lc else None)


@FORMATS.register("coco", description="COCO caption JSON: images + annotations (image_id, caption)")
def import_coco(source: Path, ctx: Context, *, media_root: Path | None = None, captions: str = "first") -> Iterator[Row | Bad]:
    """Images of a COCO caption file, paths relative to `media_root` (default: the file's folder).
    `captions="first"`: one item per image with its first caption (in annotation order);
    `"each"`: one item per caption, ids `<image>#<annotation id>`. An image's `split` field
    (Karpathy style, `restval` → train) sets its split."""
    if captions not in ("first", "each"):
        raise InputError(f"captions={captions!r}: expected 'first' or 'each'")
    root = Path(media_root) if media_root is not None else source.parent
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        images, annotations = data["images"], data["annotations"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{source}: not a COCO caption file with 'images' and 'annotations' ({exc})") from None
    by_image: dict[Any, list[tuple[int, dict[str, Any]]]] = {}
    known = {img.get("id") for img in images if isinstance(img, dict)}
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or ann.get("image_id") not in known:
            yield Bad(f"annotations[{i}]", "no image_id of a listed image")
            continue
        by_image.setdefault(ann["image_id"], []).append((i, ann))
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            yield Bad(f"images[{i}]", "no file_name")
            continue
        anns = by_image.get(img.get("id"), [])
        if not anns:
            yield Bad(f"images[{i}] ({img['file_name']})", "no caption")
            continue
        path = root / img.get("filepath", "") / img["file_name"]
        stem = Path(img["file_name"]).with_suffix("").as_posix()
        for j, ann in anns[:1] if captions == "first" else anns:
            text = ann.get("caption")
            yield Row(stem if captions == "first" else f"{stem}#{ann.get('id', j)}", f"annotations[{j}]",
                      {"image": str(path), "text": text if isinstance(text, str) else ""}, split_of(img.get("split")))


def _tar_caption(ext: str, data: bytes) -> str | None:
    """The caption in a `.txt` member, or in a `.json` member's `caption`/`text` (None when it has
    neither: metadata such as img2dataset's, not a caption)."""
    text = data.decode("utf-8")
    if ext == ".txt":
        return text.strip()
    rec = json.loads(text)
    value = next((rec[k] for k in TEXT_COLUMNS if k in rec), None) if isinstance(rec, dict) else None
    value = value[0] if isinstance(value, list) and value else value
    if value is not None and not isinstance(value, str):
        raise ValueError("its 'caption' or 'text' is not a string")
    return value


TAR_MODALITIES = {e: m for e, m in EXTENSIONS.items() if m != "text" and e not in (".off", ".xyz")}
TAR_CAPTIONS = (".txt", ".json")  # in order of preference


@FORMATS.register("webdataset", description="WebDataset tar shards: members grouped by key, modality by extension")
def import_webdataset(source: Path, ctx: Context) -> Iterator[Row | Bad]:
    """Samples of one `.tar` shard or a folder of them; media members extracted (staged). The `.txt`
    member is the caption, else a `.json` member's `caption`/`text` (a `.json` without either is
    metadata and ignored); `.cls` is the label; a shard or folder named train/val/test
    (`train-000.tar`) sets the split. A sample with an unreadable member is skipped."""
    shards = sorted(source.rglob("*.tar")) if source.is_dir() else [source]
    if not shards:
        raise InputError(f"{source}: no .tar shards")
    for shard in shards:
        rel = shard.relative_to(source) if source.is_dir() else Path(shard.name)
        split = next((split_of(p) for p in [*rel.parts[:-1], re.split(r"[-_.]", shard.stem)[0]] if split_of(p)), None)
        samples: dict[str, dict[str, Any]] = {}
        bad: dict[str, Bad] = {}
        try:
            with tarfile.open(shard, "r:*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name = member.name
                    where = f"{shard.name}:{name}"
                    base = name.rsplit("/", 1)[-1]
                    key = name[: len(name) - len(base)] + base.split(".", 1)[0]
                    ext = Path(base).suffix.lower()
                    sample = samples.setdefault(key, {})
                    if name.startswith("/") or ".." in Path(name).parts:
                        bad.setdefault(key, Bad(where, "unsafe member name"))
                        continue
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if ext == ".cls":
                        sample["label"] = data.decode("utf-8", "replace").strip()
                        continue
                    if ext in TAR_CAPTIONS:
                        sample.setdefault("captions", {})[ext] = (where, data)
                        continue
                    m = TAR_MODALITIES.get(ext)
                    if m is None:
                        continue  # other members (e.g. __key__) carry no modality
                    target = ctx.staging / rel.with_suffix("") / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                    sample[m] = str(target)
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield Bad(shard.name, f"unreadable tar ({exc}); samples read before the error are kept")
        for key, sample in samples.items():
            if key in bad:
                yield bad[key]
                continue
            label = sample.pop("label", None)
            captions = sample.pop("captions", {})
            ext = next((e for e in TAR_CAPTIONS if e in captions), None)
            if ext is not None:
                where, data = captions[ext]
                try:
                    text = _tar_caption(ext, data)
                except (UnicodeDecodeError, ValueError) as exc:
                    yield Bad(where, f"unreadable caption ({exc})")
                    continue
                if text is not None:
                    sample["text"] = text
            item_id = f"{rel.with_suffix('').as_posix()}/{key}"
            yield Row(item_id, f"{shard.name}:{key}", sample, split, label)


def _arrow_tables(source: Path) -> Iterator[tuple[str, str | None, Iterator[dict[str, Any]]]]:
    """(file stem, split from its name or folder, rows read batch by batch) of each parquet or
    `save_to_disk` arrow file."""
    ipc = require("pyarrow.ipc", "hf", "the hf import format (parquet and `save_to_disk` arrow files)")
    pq = require("pyarrow.parquet", "hf", "the hf import format (parquet and `save_to_disk` arrow files)")
    files = sorted(p for p in source.rglob("*") if p.suffix in (".parquet", ".arrow")) if source.is_dir() else [source]
    if not files:
        raise InputError(f"{source}: no .parquet or .arrow files")
    for f in files:
        rel = f.relative_to(source) if source.is_dir() else Path(f.name)
        split = next((split_of(p) for p in [*rel.parts[:-1], re.split(r"[-_.]", f.stem)[0]] if split_of(p)), None)
        yield rel.with_suffix("").as_posix(), split, _arrow_rows(f, pq, ipc)


def _arrow_rows(f: Path, pq: Any, ipc: Any) -> Iterator[dict[str, Any]]:
    """The rows of one file, `ClassLabel` ints replaced by their class names (-1, no label, by None)."""
    try:
        if f.suffix == ".parquet":
            parquet = pq.ParquetFile(f)
            schema, batches = parquet.schema_arrow, parquet.iter_batches(batch_size=256)
        else:
            batches = ipc.open_stream(f)
            schema = batches.schema
        classes = _class_names(schema)
        for i, row in enumerate(row for batch in batches for row in batch.to_pylist()):
            for col, names in classes.items():
                value = row.get(col)
                if isinstance(value, int):
                    if not -1 <= value < len(names):
                        raise ValueError(f"row {i}: column {col!r} holds class {value}; its ClassLabel has {len(names)} names")
                    row[col] = names[value] if value >= 0 else None
            yield row
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError family
        raise InputError(f"{f}: not a readable {f.suffix[1:]} file ({exc})") from None


def _class_names(schema: Any) -> dict[str, list[str]]:
    """Column → class names of the `ClassLabel` columns that a `datasets` file declares in its schema
    metadata (key `huggingface`: `{"info": {"features": {column: {"_type": "ClassLabel", "names": […]}}}}`)."""
    try:
        features = json.loads((schema.metadata or {})[b"huggingface"])["info"]["features"]
    except (KeyError, TypeError, ValueError):
        return {}  # not written by `datasets`: labels stay as stored
    return {col: f["names"] for col, f in features.items()
            if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)}


def _hf_caption(value: Any, column: str) -> str:
    """A caption cell: a string, or the first of a list of captions ('' for none)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and not isinstance(value, str):
        raise ValueError(f"column {column!r} holds a {type(value).__name__} value, not a caption string")
    return value or ""


def _hf_media(value: Any, modality: str, key: str, root: Path, ctx: Context) -> str:
    """A path for an image/audio cell: a path string, or `{bytes, path}` / `{array, sampling_rate}` written to media/."""
    if isinstance(value, str):
        return str(root / value)
    if not isinstance(value, dict):
        raise ValueError(f"expected a path or a {{bytes, path}} record, got {type(value).__name__}")
    if value.get("bytes"):
        suffix = Path(value.get("path") or "").suffix or (".wav" if modality == "audio" else ".png")
        target = ctx.staging / modality / f"{key}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(value["bytes"])
        return str(target)
    if value.get("array") is not None and modality == "audio":
        import soundfile as sf

        target = ctx.staging / modality / f"{key}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(target), np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]))
        return str(target)
    if value.get("path"):
        return str(root / value["path"])
    raise ValueError("empty media record (no bytes, array or path)")


@FORMATS.register("hf", description="Hugging Face datasets: save_to_disk folders or parquet files (needs pyarrow)")
def import_hf(source: Path, ctx: Context, *, image_column: str | None = None, audio_column: str | None = None,
              text_column: str | None = None, label_column: str | None = None, split_column: str | None = None,
              media_root: Path | None = None) -> Iterator[Row | Bad]:
    """Rows of parquet files or a `save_to_disk` folder (DatasetDict splits are subfolders). Image
    and audio cells are paths (relative to `media_root`, default the source folder) or
    `{bytes, path}` records, written to `media/`. Columns default to `image`, `audio` and
    `caption`/`text` when present; a caption cell holding a list gives its first caption; a
    `ClassLabel` column gives class names; ids are `<file>-<row>`."""
    root = Path(media_root) if media_root is not None else (source if source.is_dir() else source.parent)
    for stem, file_split, rows in _arrow_tables(source):
        for i, row in enumerate(rows):
            where, key = f"{stem}:{i}", f"{stem}-{i:06d}"
            fields = {}
            for col in (image_column, audio_column, text_column, label_column, split_column):
                if col is not None and col not in row:
                    raise InputError(f"{stem}: no column {col!r}; columns are {', '.join(row)}")
            try:
                for m, col, default in (("image", image_column, "image"), ("audio", audio_column, "audio")):
                    name = col or (default if default in row else None)
                    if name is not None and row[name] is not None:
                        fields[m] = _hf_media(row[name], m, key, root, ctx)
                tc = text_column or next((c for c in TEXT_COLUMNS if c in row), None)
                if tc is not None:
                    fields["text"] = _hf_caption(row.get(tc), tc)
            except (ValueError, TypeError, KeyError, OSError) as exc:
                yield Bad(where, f"unreadable row ({exc})")
                continue
            raw_split = row.get(split_column) if split_column else None
            yield Row(key, where, fields, split_of(raw_split) if raw_split is not None else file_split,
                      None if not label_column or row.get(label_column) is None else str(row[label_column]))


def check_options(fmt: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` if the format takes them all, else an InputError listing what it takes."""
    params = [p for p in inspect.signature(FORMATS.entry(fmt).factory).parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "only"]
    unknown = sorted(set(options) - {p.name for p in params})
    if unknown:
        takes = ", ".join(p.name for p in params) or "no options"
        raise InputError(f"import format {fmt!r} does not take {', '.join(unknown)}; it takes {takes}")
    return options


def _ratio_splits(ids: list[str], ratio: tuple[float, float, float], seed: int) -> np.ndarray:
    """The split of each id, in the order given (`SPLITS` positions, int8): a seeded permutation of
    the sorted ids gives round(n·r) train, round(n·r) val, the rest test."""
    n = len(ids)
    by_name = np.argsort(np.array(ids, dtype=str), kind="stable")  # positions of the ids in sorted order
    rank = np.empty(n, dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(n)] = np.arange(n)  # each sorted position's rank
    n_train, n_val = round(n * ratio[0]), round(n * ratio[1])
    codes = np.empty(n, dtype=np.int8)
    codes[by_name] = np.where(rank < n_train, 0, np.where(rank < n_train + n_val, 1, 2))
    return codes


def parse_ratio(text: str | list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    """`"0.8,0.1,0.1"` (or three numbers) → a train/val/test ratio summing to 1."""
    try:
        values = tuple(float(v) for v in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        raise InputError(f"split ratio {text!r}: expected three non-negative numbers summing to 1, e.g. 0.8,0.1,0.1")
    return values  # type: ignore[return-value]


def _manifest_path(path: str, out: Path) -> str:
    try:
        return Path(os.path.relpath(path, out)).as_posix()
    except ValueError:  # another drive on Windows
        return path


def import_data(fmt: str, source: str | Path, out: str | Path, *, copy: bool = False, append: bool = False,
                split: str | None = None, split_ratio: str | tuple[float, float, float] | None = None, seed: int = 0,
                id_prefix: str = "", modality: str | None = None, **options: Any) -> ImportReport:
    """Import `source` in format `fmt` into the dataset directory `out` and report what was added.

    `split` puts every item in one split; `split_ratio` (train, val, test) assigns them by a seeded
    permutation; otherwise the source's split (column, field, folder or file name), else train.
    `append` adds to an existing dataset (ids already there are skipped and reported); `copy`
    copies media into `out/media/<modality>/<item id>`; `modality` overrides the extension rule.
    Format options (`path_column`, `captions`, `media_root`, …) are listed in docs/inputs.md.
    """
    from spacebind.modalities import check_modality

    source, out = Path(source).expanduser(), Path(out).expanduser()
    options = check_options(fmt, {k: v for k, v in options.items() if v is not None})
    if not source.exists():
        raise InputError(f"import source {source} does not exist")
    if split is not None and split not in SPLITS:
        raise InputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    ratio = parse_ratio(split_ratio) if split_ratio is not None else None
    if modality is not None:
        check_modality(modality, owner="import")
    if (out / MANIFEST).is_file() and not append:
        raise InputError(f"{out} already holds a dataset; pass append to add to it, or choose another directory")
    info = read_info(out / CLASSES) or _new_info(out / MANIFEST)
    parse_classes(out / CLASSES, info, set())  # a bad classes.json fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    report = ImportReport(out=out)
    seen = set(_existing_ids(out / MANIFEST))
    ids: list[str] = []  # the new items' ids in order, for a split ratio
    labels: set[str] = set()
    outside = False
    with tempfile.TemporaryDirectory(prefix=".import-", dir=out) as work:
        ctx = Context(staging=Path(work) / MEDIA, modality=modality)
        staged = Path(work) / MANIFEST
        with staged.open("w", encoding="utf-8") as fh:  # the new records, each on its line as it is found
            for row in FORMATS.create(fmt, source=source, ctx=ctx, **options):
                if isinstance(row, Bad):
                    report.skipped.append(row)
                    continue
                row.id = id_prefix + row.id
                why = _row_problem(row, seen) or _place_media(row, copy, ctx.staging, out / MEDIA)
                if why:
                    report.skipped.append(Bad(row.where, why))
                    continue
                seen.add(row.id)
                if ratio:
                    ids.append(row.id)
                rec = _record(row, split or row.split or "train", out)
                if row.label is not None:
                    labels.add(row.label)
                outside = outside or any(m != "text" and (Path(v).is_absolute() or v.startswith("../"))
                                         for m, v in rec.items() if m in MODALITIES)
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        del seen
        codes = _ratio_splits(ids, ratio, seed) if ratio else None
        del ids
        _write_classes(out / CLASSES, info, labels, outside)  # first: a manifest is never left without its classes
        _write_manifest(out / MANIFEST, staged, codes, report)
    return report


def _write_manifest(manifest: Path, staged: Path, codes: np.ndarray | None, report: ImportReport) -> None:
    """The dataset's manifest: its lines as they were, then the staged records (their splits from
    `codes` when a ratio assigns them), counted into `report`."""
    with atomic_path(manifest) as tmp, tmp.open("w", encoding="utf-8") as fh:
        _copy_lines(manifest, fh)
        with staged.open(encoding="utf-8") as new:
            for k, line in enumerate(new):
                rec = json.loads(line)
                if codes is not None:
                    rec["split"] = SPLITS[codes[k]]
                for m in rec:
                    if m in MODALITIES:
                        report.counts.setdefault(m, {}).setdefault(rec["split"], 0)
                        report.counts[m][rec["split"]] += 1
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                report.added += 1


def _existing_ids(manifest: Path) -> Iterator[str]:
    """The ids of a dataset's manifest, read line by line (none when there is none)."""
    if manifest.is_file():
        with manifest.open(encoding="utf-8") as fh:
            yield from (str(json.loads(line)["id"]) for line in fh if line.strip())


def _copy_lines(manifest: Path, fh: Any) -> None:
    """Write a dataset's manifest lines to `fh` as they are (blank lines dropped, each ending in a newline)."""
    if manifest.is_file():
        with manifest.open(encoding="utf-8") as old:
            fh.writelines(line if line.endswith("\n") else line + "\n" for line in old if line.strip())


def _place_media(row: Row, copy: bool, staging: Path, media: Path) -> str:
    """Move a kept row's staged files (and, if `copy`, copy its other media) to
    `media/<modality>/<safe item id><suffix>`, updating `row.fields`; why not ('' when done). A file
    already there with other bytes is never overwritten."""
    moves = {}
    for m, value in row.fields.items():
        src = Path(value)
        if m == "text" or not (src.is_relative_to(staging) or copy and not src.is_relative_to(media)):
            continue
        target = media / m / (_safe_name(row.id) + src.suffix.lower())
        if target.exists() and not filecmp.cmp(src, target, shallow=False):
            return f"{target} already exists with other content (not overwritten); choose another id prefix or OUT"
        moves[m] = src, target
    for m, (src, target) in moves.items():
        if src.is_relative_to(staging):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
        else:
            with atomic_path(target) as tmp:
                shutil.copyfile(src, tmp)
        row.fields[m] = str(target)
    return ""


def _record(row: Row, split: str, out: Path) -> dict[str, Any]:
    """A row as a manifest record, paths relative to `out`."""
    rec: dict[str, Any] = {"id": row.id, "split": split}
    if row.label is not None:
        rec["label"] = row.label
    for m, value in row.fields.items():
        rec[m] = value.strip() if m == "text" else _manifest_path(value, out)
    return rec


def _row_problem(row: Row, seen: set[str]) -> str:
    """Why a row cannot become an item ('' if it can)."""
    if not row.fields:
        return "no media and no caption"
    if row.id in seen:
        return f"duplicate id {row.id!r} (the first one is kept)"
    for m, value in row.fields.items():
        if m == "text" and not value.strip():
            return "empty caption"
        if m != "text" and not Path(value).is_file():
            return f"missing {m} file {value}"
    return ""


def _safe_name(item_id: str) -> str:
    """A relative file path for an item id, one-to-one: an id that needs changing (characters outside
    `A-Za-z0-9._-`, empty, `.` or `..` parts) gets `~` and a hash of the id, which no unchanged id has."""
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in item_id.split("/") if p not in ("", ".", "..")]
    name = "/".join(parts) or "item"
    return name if name == item_id else f"{name}~{hashlib.sha256(item_id.encode()).hexdigest()[:8]}"


def _new_info(manifest: Path) -> dict[str, Any]:
    """`classes.json` for a dataset that has none: template `{}`, and an empty class list unless
    the manifest already has items (their labels are its classes while the file has no list)."""
    return {"templates": ["{}"]} if manifest.is_file() else {"templates": ["{}"], "classes": []}


def _write_classes(path: Path, data: dict[str, Any], labels: set[str], outside_root: bool = False) -> None:
    """Merge `labels` into `classes.json` as read (`data`, keeping its templates and synonyms);
    without a class list it stays without one (`Dataset.load` then takes every item's label).
    `outside_root` opts the dataset in to media paths outside its directory (kept once set)."""
    if "classes" in data:
        known = {c["name"] for c in data["classes"]}
        data["classes"] += [{"name": n} for n in sorted(labels - known)]
    if outside_root:
        data[OUTSIDE_ROOT] = True
    write_json(path, data)


def format_report(report: ImportReport, shown: int = 20) -> list[str]:
    """Lines for a person: counts per modality and split, then the skipped rows (first `shown`)."""
    lines = [f"{report.added} items added to {report.out}"]
    for m, by_split in report.counts.items():
        lines.append(f"  {m}: " + ", ".join(f"{s} {by_split[s]}" for s in SPLITS if s in by_split))
    if report.skipped:
        lines.append(f"{len(report.skipped)} skipped:")
        lines += [f"  {b.where}: {b.why}" for b in report.skipped[:shown]]
        if len(report.skipped) > shown:
            lines.append(f"  … and {len(report.skipped) - shown} more")
    return lines


__all__ = ["FORMATS", "Bad", "ImportReport", "Row", "check_options", "format_report", "import_data", "parse_ratio", "split_of"]
