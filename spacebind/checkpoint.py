"""Fused checkpoints: a directory with the trained heads, the bond structure, the recipe,
metrics and a model card. Experts are referenced by source, checkpoint path and sha256, not copied.

    OUT/model.safetensors   heads only, keys `bonds.<i>.<expert>.<param>` (bonds in post-order)
    OUT/config.json         {"format", "spacebind_version", "space": <tree>}
    OUT/recipe.yaml         the recipe, verbatim (when given)
    OUT/metrics.json        evaluation records (a JSON list)
    OUT/README.md           model card
    OUT/history.json        per-epoch training history of every trained projector (when given)
    OUT/history.png         its loss and val recall@1 curves, linked from the model card

An export is built in a hidden sibling directory and put in place as a unit (the previous export
stays whole until the new one is complete, see `spacebind.io.files.replace_dir`); config.json,
written last, records the sha256 of every other file it was written with (`weights_sha256`,
`files_sha256`), and loading refuses files that do not belong together.
"""
from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from safetensors.torch import load_file

from spacebind.bonds import BONDS, BondNode, head_from_config
from spacebind.errors import CheckpointError, StorageError, UnknownNameError
from spacebind.experts import (
    FILE_KWARGS,
    build_expert,
    checkpoint_search_path,
    file_arguments,
    hub_files,
    is_file_argument,
    is_import_path,
    portable_kwargs,
    recorded_names,
    remember_files,
    resolve_files,
)
from spacebind.io.files import (
    check_output,
    keep_other_files,
    save_tensors,
    sha256_file,
    storage_errors,
    write_json,
    write_text,
)
from spacebind.io.locks import replacing_dir
from spacebind.model_card import model_card
from spacebind.space import Expert, Space

FORMAT = 1
CARD = "README.md"  # the model card: recorded with the export, not checked on load
# what `save_space` writes itself; other files an export records come from `extra` (UniBind's)
OWN_FILES = ("model.safetensors", "config.json", "recipe.yaml", "metrics.json", "README.md", "history.json",
             "history.png")
SWEEP_FILES = ("sweep.json", "sweep.png")  # `spacebind sweep`'s results, recorded in the export it swept


def spacebind_version() -> str:
    return version("spacebind")


_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float64: "float64"}  # config.json names


def space_config(space: Space) -> dict[str, Any]:
    """The JSON tree that rebuilds `space` (experts by reference, bonds with head configs)."""
    index = {id(b): i for i, b in enumerate(space.bonds())} if isinstance(space, BondNode) else {}
    names = recorded_names({path for leaf in space.leaves() for path in file_arguments(leaf.spec.kwargs).values()})

    def node(s: Space) -> dict[str, Any]:
        if isinstance(s, Expert):
            return {"type": "expert", "name": s.name, "dim": s.dim, "modalities": list(s.modalities),
                    **_portable(s, names)}
        if isinstance(s, BondNode):
            return s.to_config(index[id(s)], node)
        raise CheckpointError(f"cannot save a {type(s).__name__}; only experts and bond nodes ({', '.join(BONDS.list())})")

    return node(space)


def _portable(expert: Expert, names: dict[str, str]) -> dict[str, Any]:
    """The expert's spec with file arguments by their recorded names only (`files`; `names` from
    `recorded_names` over the export), so the export moves with them, and, for files inside a
    Hugging Face cache snapshot, their hub origin (`hub_files`)."""
    spec = expert.spec.to_json()
    remember_files(spec["source"], spec["kwargs"], names)
    hub = hub_files(spec["kwargs"])
    spec["kwargs"], files = portable_kwargs(spec["kwargs"], names)
    if spec["checkpoint"]:
        spec["checkpoint"] = Path(spec["checkpoint"]).name
    return {**spec, **({"files": files} if files else {}), **({"hub_files": hub} if hub else {})}


def head_tensors(space: Space) -> dict[str, torch.Tensor]:
    if not isinstance(space, BondNode):
        return {}
    return {
        f"bonds.{i}.{name}.{key}": value.detach().cpu()
        for i, bond in enumerate(space.bonds())
        for name, head in bond.heads.items()
        for key, value in head.state_dict().items()
    }


def save_space(
    space: Space,
    directory: str | Path,
    *,
    recipe_text: str | None = None,
    metrics: list[dict[str, Any]] | None = None,
    extra: Callable[[Path], object] | None = None,
    history: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """Write `space` as a fused checkpoint directory, replacing a previous export as a unit;
    returns the directory. `extra(dir)` may add files of the same export (e.g. `UniBind.save`);
    `history` (member key → per-epoch rows) becomes history.json and history.png.

    Files of the previous export that were not part of it (put there by hand) are kept, but not
    checked on load; its own files (those its config.json records) go with it. A directory that is
    not empty and not an export is refused.
    """
    out = check_export_target(directory)
    tensors = head_tensors(space)
    with replacing_dir(out, "export directory") as stage:  # one export at a time per target
        try:
            save_tensors(stage / "model.safetensors", tensors, metadata={"format": str(FORMAT)})
            config = {"format": FORMAT, "spacebind_version": spacebind_version(),
                      "weights_sha256": sha256_file(stage / "model.safetensors"), "space": space_config(space),
                      **({"dtype": _DTYPES[space.dtype]} if space.dtype != torch.float32 else {})}
            if recipe_text is not None:
                write_text(stage / "recipe.yaml", recipe_text)
            write_json(stage / "metrics.json", metrics or [])
            if history:
                from spacebind.training.history import plot_histories

                write_json(stage / "history.json", history)
                plot_histories(history, stage / "history.png")
            if extra is not None:
                extra(stage)
            unibind = json.loads((stage / "unibind.json").read_text(encoding="utf-8")) if (stage / "unibind.json").is_file() else None
            swept = [name for name in SWEEP_FILES if (stage / name).is_file()]
            write_text(stage / "README.md", model_card(space, config, metrics or [], history, unibind, swept))
            config["files_sha256"] = {p.name: sha256_file(p) for p in sorted(stage.iterdir())
                                      if p.is_file() and p.name != "model.safetensors"}
            write_json(stage / "config.json", config)
            keep_other_files(out, stage, _export_files(out))
        except StorageError as exc:
            error = StorageError(str(exc).replace(str(stage), str(out)))  # name the file the user asked for
            error.errno = exc.errno
            raise error from exc
    return Path(directory)


def check_export_target(directory: str | Path) -> Path:
    """`directory` resolved (an export reached through a symlink is replaced where it lies), unless
    an export cannot go there: a file, or a directory that is not empty and not a fused checkpoint."""
    out = check_output(Path(directory).resolve(), directory=True, what="export directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise CheckpointError(f"{out} is not empty and not a fused checkpoint: export into a new or empty directory")
    return out


def resave(space: Space, directory: str | Path, files: Mapping[str, Callable[[Path], object]] | None = None) -> Path:
    """Write `space` over the fused checkpoint `directory`, keeping the rest of the export as it was:
    recipe, metrics, training history and the files later stages added (UniBind's, a sweep's). For
    changes that leave the heads' meaning as it was, e.g. the presets `sweep` adds. `files` (name →
    writer of that path) adds files to the export, replacing any of those names; a writer may
    write nothing (the name then leaves the export)."""
    root = Path(directory)
    config = read_config(root)
    # an export written before `files_sha256` existed: its own files are the ones save_space writes
    recorded = set(config["files_sha256"]) if "files_sha256" in config else {
        p.name for p in root.iterdir() if p.name in OWN_FILES and p.is_file()}

    def recorded_text(name: str) -> str | None:
        return (root / name).read_text(encoding="utf-8") if name in recorded else None

    def read(name: str) -> Any:
        text = recorded_text(name)
        return json.loads(text) if text is not None else None

    carried = sorted(recorded - set(OWN_FILES) - set(files or {}))

    def carry(stage: Path) -> None:
        for name in carried:
            with storage_errors(stage / name):
                shutil.copy2(root / name, stage / name)
        for name, write in (files or {}).items():
            write(stage / name)

    return save_space(space, root, recipe_text=recorded_text("recipe.yaml"), metrics=read("metrics.json"),
                      history=read("history.json"), extra=carry if carried or files else None)


def _export_files(directory: Path) -> set[str]:
    """The files of the export in `directory` (what its config.json records, if it reads)."""
    try:
        recorded = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("files_sha256") or {}
    except (OSError, ValueError, AttributeError):
        recorded = {}
    return {*OWN_FILES, *recorded}


def load(
    directory: str | Path, experts: Mapping[str, Space] | None = None, *, verify: bool = True, preset: str | None = None,
    trust_remote_code: bool = False, checkpoint_dir: str | Path | Sequence[str | Path] | None = None,
) -> Space:
    """Load a fused checkpoint. `experts` overrides experts by name (e.g. ones built in memory);
    with `verify`, an expert checkpoint whose sha256 differs from the recorded one is refused;
    `preset` selects a named λ preset of the outermost bond (coarse-to-fine inference).

    Loading runs no code from the checkpoint unless the caller opts in: an expert named by an
    import path (user code) or carrying `trust_remote_code` (code shipped in a model snapshot) is
    refused, before anything is imported, unless `trust_remote_code=True` or the caller passes
    that expert in `experts`. Registry experts and the heads (safetensors) run no stored code.

    Expert files (checkpoints, tokenizers) are recorded by name and sha256 and looked for in
    `checkpoint_dir` (one directory or several), then `$SPACEBIND_CHECKPOINTS`, then the export
    directory, then (for files saved from a Hugging Face cache snapshot, which records their repo,
    commit and path) this machine's Hugging Face cache, then where this machine last saw them; a
    file found nowhere is one error listing every expert, file and place looked in.

    `directory` may also be a hub id `org/name[@revision]` (when no such local directory exists):
    its snapshot is fetched into the Hugging Face cache, or only read from there with
    `HF_HUB_OFFLINE=1`, and loaded by the same rules (see `spacebind.interop.hub`)."""
    from spacebind.interop.hub import checkpoint_directory

    root = checkpoint_directory(directory)
    config_path = root / "config.json"
    config = read_config(root)
    _check_tree(config.get("space"), "space", config_path)
    if not trust_remote_code:
        _refuse_code(config["space"], set(experts or {}), config_path)
    dirs = [checkpoint_dir] if isinstance(checkpoint_dir, (str, Path)) else list(checkpoint_dir or [])
    _locate_files(config["space"], set(experts or {}), [*checkpoint_search_path(dirs), root], config_path)
    tensors = _read_tensors(root / "model.safetensors")
    used: set[str] = set()
    space = _build(config["space"], tensors, used, dict(experts or {}), verify, config_path)
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise CheckpointError(f"{root / 'model.safetensors'}: unexpected keys {unexpected}")
    if "dtype" in config:  # a space saved after `Space.to(dtype)` loads in that dtype
        names = {v: k for k, v in _DTYPES.items()}
        if config["dtype"] not in names:
            raise CheckpointError(f"{config_path}: dtype {config['dtype']!r}; expected one of {sorted(names)}")
        space.to(names[config["dtype"]])
    if preset is not None:
        if not hasattr(space, "with_lambdas"):
            raise CheckpointError(f"{root}: preset {preset!r} asked for, but the space has no bond")
        space = space.with_lambdas(preset)
    return space


def read_config(root: Path) -> dict[str, Any]:
    """The `config.json` of fused checkpoint directory `root`, checked: valid JSON of this format,
    written with the `model.safetensors` beside it (`weights_sha256`)."""
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{root} is not a fused checkpoint: no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise CheckpointError(f"{config_path}: format {found!r}, this spacebind reads {FORMAT}")
    weights = root / "model.safetensors"
    if config.get("weights_sha256") and (not weights.is_file() or sha256_file(weights) != config["weights_sha256"]):
        raise CheckpointError(f"{weights} does not belong with {config_path}: the config was written with other "
                              "weights (an interrupted or mixed export); export the space again")
    recorded = config.get("files_sha256") or {}
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{config_path}: files_sha256: expected checksums by file name; the config is damaged")
    for name, digest in recorded.items():
        path = root / Path(name).name
        if path.name == CARD:  # for people and the Hub, where editing a card is routine; it fixes no embedding
            continue
        if not path.is_file() or sha256_file(path) != digest:
            raise CheckpointError(f"{path} does not belong with {config_path}: missing, or from another "
                                  "export (a mixed export directory); export the space again")
    return config


MAX_DEPTH = 64  # bonds nested deeper than any recipe builds: a damaged or crafted config


def _check_tree(node: Any, at: str, where: Path, depth: int = 0) -> None:
    """Raise a CheckpointError naming the field unless `node` is a well-formed space tree: expert
    nodes with a name, source, integer dim, modality list, object `kwargs` and file arguments
    (`files`) by bare name; bond nodes with a kind, base, experts, heads and numeric λ."""
    def bad(field: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{where}: {at}{field}: expected {expected}; the config is damaged, export the space again")

    def check(field: str, ok: bool, expected: str) -> None:
        if not ok:
            raise bad(field, expected)

    check("", isinstance(node, dict) and node.get("type") in ("expert", "bond"), "an expert or bond node")
    check("", depth <= MAX_DEPTH, f"at most {MAX_DEPTH} nested bonds")
    check(".dim", isinstance(node.get("dim"), int) and not isinstance(node["dim"], bool) and node["dim"] > 0,
          "a positive integer")
    check(".modalities", isinstance(node.get("modalities"), list) and all(isinstance(m, str) for m in node["modalities"]),
          "a list of modality names")
    check(".name", isinstance(node.get("name"), str), "a string")
    if node["type"] == "expert":
        check(".source", isinstance(node.get("source"), str), "a registry name or import path")
        check(".kwargs", isinstance(node.get("kwargs", {}), dict), "an object of keyword arguments")
        files = node.get("files", {})
        check(".files", isinstance(files, dict) and all(is_file_argument(k) and isinstance(v, str) for k, v in files.items()),
              f"file names by argument ({', '.join(FILE_KWARGS)}, or an inner expert's as kwargs.<argument>)")
        check(".hub_files", isinstance(node.get("hub_files", {}), dict), "an object")
        return
    check(".bond", isinstance(node.get("bond"), str), "a bond kind")
    check(".index", isinstance(node.get("index"), int), "an integer")
    check(".heads", isinstance(node.get("heads"), dict) and all(isinstance(h, dict) for h in node["heads"].values()),
          "head configs by expert")
    check(".lambdas", isinstance(node.get("lambdas"), dict)
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node["lambdas"].values()),
          "numbers by modality")
    check(".presets", isinstance(node.get("presets") or {}, dict), "an object of named settings")
    check(".experts", isinstance(node.get("experts"), list), "a list of nodes")
    _check_tree(node.get("base"), f"{at}.base", where, depth + 1)
    for i, child in enumerate(node["experts"]):
        _check_tree(child, f"{at}.experts[{i}]", where, depth + 1)


def _asks_for_remote_code(kwargs: Any) -> bool:
    """Whether a kwargs tree sets `trust_remote_code` anywhere (also an adapter's inner expert's kwargs)."""
    if isinstance(kwargs, dict):
        return bool(kwargs.get("trust_remote_code")) or any(_asks_for_remote_code(v) for v in kwargs.values())
    if isinstance(kwargs, list):
        return any(_asks_for_remote_code(v) for v in kwargs)
    return False


def _stored_experts(node: dict[str, Any], given: set[str]) -> Iterator[dict[str, Any]]:
    """The expert nodes of a config tree that loading would build (not those the caller gives)."""
    if node["type"] != "expert":
        for child in [node["base"], *node["experts"]]:
            yield from _stored_experts(child, given)
    elif node.get("name") not in given:
        yield node


def _refuse_code(node: dict[str, Any], given: set[str], where: Path) -> None:
    """A named error for every expert of the tree whose loading would run stored code."""
    problems = []
    for n in _stored_experts(node, given):
        name, source, kwargs = n.get("name"), str(n.get("source", "")), n.get("kwargs") or {}
        if source.startswith("<in-memory"):  # in-memory experts must be given anyway
            continue
        if is_import_path(source):
            problems.append(f"expert {name!r} is user code ({source!r}): loading it imports and runs that code")
        elif _asks_for_remote_code(kwargs):
            problems.append(f"expert {name!r} ({source}) runs the code shipped in its model snapshot (trust_remote_code)")
    if problems:
        raise CheckpointError(f"{where}: refused to load; " + "; ".join(problems) + ". If you trust this checkpoint, "
                              "load it with trust_remote_code=True (CLI: --trust-remote-code), or pass those experts "
                              "yourself: load(..., experts={name: space})")


def _locate_files(node: dict[str, Any], given: set[str], search: list[Path], where: Path) -> None:
    """Point every expert's recorded file names (`files`) at the files found in `search`, in place."""
    missing = []
    for n in _stored_experts(node, given):
        if n.get("files"):
            n["kwargs"], lost = resolve_files(str(n.get("source")), n["files"], n.get("kwargs") or {}, search,
                                              n.get("hub_files"))
            missing.extend(f"expert {n['name']!r} ({n.get('source')}) needs {line}" for line in lost)
    if missing:
        raise CheckpointError(f"{where}: expert files not found:\n  " + "\n  ".join(missing)
                              + "\nput them in one of those directories, or name one with checkpoint_dir= "
                              "(or $SPACEBIND_CHECKPOINTS)")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The heads' tensors, each checked finite; a damaged file is a named error."""
    if not path.is_file():
        return {}
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(f"{path}: tensors with NaN or infinite values: {bad}")
    return tensors


def _build(node: dict, tensors: dict, used: set, overrides: dict, verify: bool, where: Path) -> Space:
    if node["type"] == "expert":
        name = node["name"]
        if name in overrides:
            return overrides[name]
        if node["source"].startswith("<in-memory"):
            raise CheckpointError(
                f"{where}: expert {name!r} was built in memory; pass it as load(..., experts={{{name!r}: space}})"
            )
        expert = build_expert(node["source"], node.get("kwargs"), name=name)
        _verify_expert(expert, node, verify, where)
        return expert
    base = _build(node["base"], tensors, used, overrides, verify, where)
    experts = [_build(e, tensors, used, overrides, verify, where) for e in node["experts"]]
    heads = {}
    for name, head_config in node["heads"].items():
        head = head_from_config(head_config)
        prefix = f"bonds.{node['index']}.{name}."
        state = {k: tensors[prefix + k] for k in head.state_dict() if prefix + k in tensors}
        used.update(prefix + k for k in state)
        missing = sorted(set(head.state_dict()) - set(state))
        if missing:
            raise CheckpointError(f"{where.parent / 'model.safetensors'}: missing keys {[prefix + k for k in missing]}")
        shapes = {k: (tuple(v.shape), tuple(state[k].shape)) for k, v in head.state_dict().items()
                  if tuple(v.shape) != tuple(state[k].shape)}
        if shapes:
            raise CheckpointError(f"{where.parent / 'model.safetensors'}: misshaped keys (expected, found): "
                                  + ", ".join(f"{prefix + k} {e} vs {f}" for k, (e, f) in shapes.items()))
        head.load_state_dict(state, strict=True)
        heads[name] = head
    try:
        kind = BONDS.entry(str(node.get("bond"))).factory
    except UnknownNameError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    return kind.from_config(node, base, experts, heads)


def _verify_expert(expert: Expert, node: dict, verify: bool, where: Path) -> None:
    if expert.dim != node["dim"]:
        raise CheckpointError(f"{where}: expert {node['name']!r} now has dim {expert.dim}, the checkpoint expects {node['dim']}")
    recorded = node.get("sha256")
    if verify and recorded and expert.spec.sha256 and expert.spec.sha256 != recorded:
        raise CheckpointError(
            f"{where}: expert {node['name']!r} checkpoint {expert.spec.checkpoint} has sha256 "
            f"{expert.spec.sha256[:12]}…, the fused checkpoint was trained with {recorded[:12]}…"
        )
