"""The recipe schema: a YAML file naming data, experts, bonds, training, evaluation and export.

Validation is strict (`extra="forbid"`), reports every error at once with its field path, and
suggests the nearest name for an unknown field, expert or bond.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator, model_validator

from spacebind.bonds import bond_kinds
from spacebind.bonds.bind import projector_choices
from spacebind.bonds.heads import projector_types
from spacebind.bonds.lambdas import split_setting
from spacebind.bonds.route import RouterConfig
from spacebind.errors import RecipeError
from spacebind.experts import is_import_path
from spacebind.modalities import MODALITIES
from spacebind.retrieval.mining import MiningIndex
from spacebind.retrieval.pseudo import PseudoDataset
from spacebind.training.trainer import MAX_SEED, TrainConfig
from spacebind.world.concepts import WORDS

SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorldData(Strict):
    """Generate the procedural world (see `spacebind world generate`)."""

    seed: int = Field(0, ge=0, lt=MAX_SEED)
    train: int = Field(2000, ge=1)
    val: int = Field(300, ge=1)
    test: int = Field(500, ge=1)
    concepts_seed: int = Field(0, ge=0, lt=MAX_SEED)
    num_concepts: int = Field(24, ge=2, le=len(WORDS), description="concepts of the world (one per word of its vocabulary)")
    sensors: list[Literal["video", "thermal", "event"]] = Field(
        default_factory=list, description="optional world modalities to generate as well")
    unpaired: bool = Field(False, description="train split as unimodal pools (one modality per item); val and test stay paired")


class ImportData(BaseModel):
    """Import a source in a common layout (see `spacebind data import`); other keys are the format's
    options (`path_column`, `captions`, `media_root`, …), checked against it."""

    model_config = ConfigDict(extra="allow")

    format: str
    source: Path
    copy_media: bool = Field(False, alias="copy", description="copy media into the imported dataset")
    split: Literal["train", "val", "test"] | None = None
    split_ratio: list[float] | None = Field(None, description="train, val, test fractions (seeded permutation)")
    seed: int = Field(0, ge=0, lt=MAX_SEED)
    id_prefix: str = ""
    modality: str | None = None

    @field_validator("format")
    @classmethod
    def _known_format(cls, fmt: str) -> str:
        from spacebind.io.importers import FORMATS

        return _known(fmt, FORMATS.list(), "import format")

    @model_validator(mode="after")
    def _format_options(self) -> "ImportData":
        from spacebind.io.importers import check_options, parse_ratio

        problems = []  # every one at once
        for check in (lambda: check_options(self.format, self.model_extra or {}),
                      lambda: self.split_ratio is None or parse_ratio(self.split_ratio),
                      lambda: self.modality is None or _known(self.modality, list(MODALITIES), "modality")):
            try:
                check()
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DataConfig(Strict):
    """Exactly one of `path` (a dataset directory or manifest), `world`, or `import` (one source or
    a list, imported in order into one dataset)."""

    path: Path | None = None
    world: WorldData | None = None
    import_: list[ImportData] | None = Field(None, alias="import", min_length=1)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("import_", mode="before")
    @classmethod
    def _one_import(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if sum(x is not None for x in (self.path, self.world, self.import_)) != 1:
            raise ValueError("give exactly one of 'path' (a dataset), 'world' (generate the procedural world) "
                             "or 'import' (a source in a common layout)")
        return self

    @property
    def imports(self) -> list[ImportData]:
        """The import sources in order (empty unless `import` is given)."""
        return self.import_ or []


class ExpertConfig(Strict):
    """An expert by registry name (`name`) or user code (`import: module:attribute`)."""

    name: str | None = None
    import_: str | None = Field(None, alias="import")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"import": value} if is_import_path(value) else {"name": value}
        return value

    @field_validator("name")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        from spacebind.experts.registry import EXPERTS

        if name is not None and name not in EXPERTS:
            raise ValueError(EXPERTS.unknown_message(name))
        return name

    @field_validator("import_")
    @classmethod
    def _import_form(cls, path: str | None) -> str | None:
        if path is not None and not is_import_path(path):
            raise ValueError(f"import path {path!r} must look like 'package.module:attribute'")
        return path

    @model_validator(mode="after")
    def _one_source(self) -> "ExpertConfig":
        if (self.name is None) == (self.import_ is None):
            raise ValueError("give exactly one of 'name' (a registered expert) or 'import' (module:attribute)")
        if self.name is not None:
            from spacebind.experts.registry import EXPERTS

            problem = EXPERTS.argument_problem(self.name, self.kwargs)
            if problem:
                raise ValueError(f"kwargs: {problem}")
        return self

    @property
    def source(self) -> str:
        return self.name or self.import_ or ""


def _check_modality_keys(value: dict[str, Any]) -> dict[str, Any]:
    for m in value:
        if m not in MODALITIES:
            raise ValueError(f"unknown modality {m!r}; expected one of {', '.join(MODALITIES)}")
    return value


def _check_lambdas(lambdas: dict[str, float]) -> dict[str, float]:
    """`lambdas` if every key is a modality and every value in [0, 1]; else one ValueError naming every bad λ."""
    bad = [f"unknown modality {m!r}" for m in lambdas if m not in MODALITIES]
    bad += [f"lambda for {m!r} is {v}" for m, v in lambdas.items() if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"{'; '.join(bad)}; expected modalities among {', '.join(MODALITIES)} and values in [0, 1]")
    return lambdas


class RelativeConfig(Strict):
    """Settings of the training-free relative-representation projector (ASIF)."""

    anchors: int = Field(512, ge=1, description="paired training items used as anchors")
    k: int = Field(32, ge=1, description="anchor similarities kept per item")
    power: float = Field(8.0, gt=0, allow_inf_nan=False, description="exponent on the kept similarities")


def _known(name: str, known: list[str], what: str) -> str:
    """`name` if it is one of `known`, else a ValueError with the nearest name and the list."""
    if name not in known:
        near = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown {what} {name!r}.{hint} Known: {', '.join(known)}")
    return name


class BondConfig(Strict):
    """One bond applied to the space built so far: `type` and the expert(s) it brings in."""

    type: str
    experts: list[str] = Field(min_length=1)
    lambdas: dict[str, float] = Field(default_factory=dict, description=(
        "λ per modality, the weight of the projected side; unset: 0.5, a combination's text 0.1 (FreeBind's versatile)"))
    projector: str = Field("auto", description=(
        "projector type, or auto: FreeBind's MLP unless Procrustes is better on val beyond the noise"))
    mixture: int = Field(1, ge=1)
    pairing: Literal["auto", "same", "cross", "all"] = Field(
        "auto", description="target modalities each projector learns from (auto: the target's reliable ones)")
    tune: bool = Field(True, description="choose λ on the val split, keeping `lambdas` unless beaten beyond the noise")
    channel: bool = Field(True, description="with tune: let val weigh a channel of the projected side's own embeddings")
    groups: str | None = Field(None, description=(
        "with tune: item attribute (e.g. speaker) whose val items the guard's bootstrap resamples together; "
        "default: each item on its own"))
    pbar: Literal["unit", "plain"] = Field("unit", description=(
        "P̄, the mean of the projectors' unit outputs: unit renormalises it before mixing (FreeBind), "
        "plain mixes it as it is (OmniBind's anchor)"))
    curate: int | None = Field(None, ge=1, description="concept-balanced curation: train items per class")
    relative: RelativeConfig = Field(default_factory=RelativeConfig)
    presets: dict[str, dict[str, float]] = Field(default_factory=dict, description=(
        "named inference settings to load by name (coarse-to-fine): λ by modality, and κ of the channel "
        "under channel:<modality>"))
    pseudo: list[PseudoDataset] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict) and "expert" in value:
            value = dict(value)
            if "experts" in value:
                raise ValueError("give 'expert' or 'experts', not both")
            value["experts"] = [value.pop("expert")]
        return value

    @field_validator("type")
    @classmethod
    def _known_bond(cls, kind: str) -> str:
        from spacebind.bonds import BONDS
        from spacebind.bonds.node import BondNode

        _known(kind, bond_kinds("bonds"), "bond")
        train = BONDS.entry(kind).factory.train
        if getattr(train, "__func__", train) is BondNode.train.__func__:
            raise ValueError(f"bond kind {kind!r} defines no `train`, so a recipe cannot build it "
                             "(docs/extending.md, \"Add a bond kind\")")
        return kind

    @field_validator("projector")
    @classmethod
    def _known_projector(cls, kind: str) -> str:
        return _known(kind, projector_choices(), "projector")

    @field_validator("lambdas")
    @classmethod
    def _lambda_values(cls, lambdas: dict[str, float]) -> dict[str, float]:
        return _check_lambdas(lambdas)

    @field_validator("presets")
    @classmethod
    def _preset_values(cls, presets: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for name, values in presets.items():
            try:
                for part in split_setting(values):
                    _check_lambdas(part)
            except ValueError as exc:
                raise ValueError(f"preset {name!r}: {exc}") from None
        return presets

    @model_validator(mode="after")
    def _displacement_single(self) -> "BondConfig":
        if self.type == "displacement" and len(self.experts) != 1:
            raise ValueError("a displacement bond moves the space to one expert; list exactly one")
        if self.pseudo and self.mixture not in (1, len(self.pseudo)):
            raise ValueError(f"with {len(self.pseudo)} pseudo datasets the mixture has one member each; "
                             f"drop 'mixture' or set it to {len(self.pseudo)}")
        if self.pseudo and self.projector not in ("auto", "mlp"):
            raise ValueError(f"pseudo datasets train one MLP projector each; projector {self.projector!r} is "
                             "fitted without training: use projector auto or mlp, or drop 'pseudo'")
        if self.pseudo and self.curate is not None:
            raise ValueError("curate balances the paired train items; with 'pseudo' the bond learns from pseudo "
                             "pairs instead: drop one of them")
        return self


class RoutedConfig(Strict):
    """OmniBind: remap `experts` into the space built by `base` and `bonds` (the target, which stays
    a candidate of every modality it covers) and train one router per modality (`spacebind.bonds.route`)."""

    experts: list[str] = Field(min_length=1)
    projector: str = "mlp"
    mixture: int = Field(1, ge=1)
    pairing: Literal["auto", "same", "cross", "all"] = "all"
    pseudo: list[PseudoDataset] = Field(default_factory=list)
    scales: dict[str, FiniteFloat] = Field(default_factory=dict, description="router scale s per modality (default: text 10, else 1)")
    inputs: dict[str, list[str]] = Field(default_factory=dict, description="router-input experts per modality (default: all covering it)")
    router: RouterConfig = Field(default_factory=RouterConfig)

    @field_validator("projector")
    @classmethod
    def _known_projector(cls, kind: str) -> str:
        return _known(kind, projector_types(), "projector")

    @field_validator("scales", "inputs")
    @classmethod
    def _modalities(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_modality_keys(value)


class EvalConfig(Strict):
    split: Literal["train", "val", "test"] = "test"
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1, description="recall@k cut-offs: 1 among them, each at least 1, no repeats")

    @field_validator("ks")
    @classmethod
    def _positive_unique(cls, ks: list[int]) -> list[int]:
        bad = [k for k in ks if k < 1]
        if bad:
            raise ValueError(f"each k must be at least 1; got {bad}")
        repeated = sorted({k for k in ks if ks.count(k) > 1})
        if repeated:
            raise ValueError(f"k listed more than once: {repeated}")
        if 1 not in ks:
            raise ValueError(f"ks {ks} lacks 1: R@1 is what the tables, the model card and the choices on val read")
        return ks


class ExportConfig(Strict):
    out: Path | None = None


class UniBindConfig(Strict):
    """UniBind on the fused space: knowledge-base class centres, aligned projectors, voting.

    Two modes, chosen field by field (the defaults are spacebind's; `scoring: descriptions` with
    `head: linear` and `descriptions: 50` is the official code's, QC-LY/UniBind):

    - `scoring`: `centres` (default) averages each class's `descriptions` nearest descriptions into
      one centre mixed `mix` with the class prompt and scores the cosine to it; `descriptions` keeps
      those descriptions apart and scores a class by the best cosine among them (top-1; `mix` unused
      there but by an `mlp` head's targets).
    - `head` (with `align: true`): `mlp` (default) is a projector per modality trained against the
      centres (cross-entropy with the item's class, τ 0.05, AdamW lr 1e-3); `linear` is one linear
      layer per modality trained by InfoNCE of each item against its own description (its paired
      text, else its class's nearest description; τ 1, AdamW lr 5e-4, weight decay 0.01, batch
      1024, linear decay, gradients clipped to 1).
    - `epochs`: default 20 for `mlp`, 15 for `linear` (the official fine-tune).
    """

    knowledge: str = Field("world", description="a JSON/JSONL file (class → descriptions), or 'world'")
    generator: Path | None = Field(None, description="a local text-generation model directory to write the knowledge base")
    descriptions: int = Field(8, ge=1, description="descriptions nearest each class's items that form its centre "
                                                    "(or, with scoring: descriptions, that it keeps)")
    mix: float = Field(0.5, ge=0, le=1, allow_inf_nan=False, description="weight of the plain class-name prompt in a centre")
    align: bool = True
    scoring: Literal["centres", "descriptions"] = Field(
        "centres", description="centres: cosine to one centre per class; descriptions: best cosine among the class's descriptions (official)")
    head: Literal["mlp", "linear"] = Field(
        "mlp", description="with align: mlp against the centres; linear: the official nn.Linear, InfoNCE against each item's own description")
    vote_weight: float = Field(0.0, ge=0, allow_inf_nan=False, description="weight of retrieval-augmented knowledge votes")
    k: int = Field(10, ge=1, description="descriptions each item retrieves for voting")
    epochs: int | None = Field(None, ge=1, description="head training epochs; default 20 (mlp) or 15 (linear)")

    @model_validator(mode="after")
    def _head_needs_align(self) -> "UniBindConfig":
        if "head" in self.model_fields_set and not self.align:
            raise ValueError(f"head: {self.head!r} trains a head, but align is false; drop head or set align: true")
        return self


class Recipe(Strict):
    """A whole fuse job."""

    name: str
    data: DataConfig
    experts: dict[str, ExpertConfig] = Field(min_length=1)
    base: str
    bonds: list[BondConfig] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    unibind: UniBindConfig | None = None
    routed: RoutedConfig | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if len(name) > 255 or not SAFE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} names the work and export directories: use letters, digits, '.', '_' "
                             "and '-', not starting with '.'")
        return name


def _reference_errors(raw: dict[str, Any]) -> list[str]:
    """Cross-field checks that work on the raw mapping, so they are reported with schema errors."""
    experts = raw.get("experts")
    if not isinstance(experts, dict):
        return []
    names = [name for name in experts if isinstance(name, str)]  # other keys are schema errors
    errors = []

    def check(loc: str, ref: Any) -> None:
        # only strings are looked up: other types are reported by the schema with their path
        if isinstance(ref, str) and ref not in experts:
            near = difflib.get_close_matches(ref, names, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            errors.append(f"{loc}: {ref!r} is not one of the recipe's experts ({', '.join(names)}).{hint}")

    def as_list(value: Any) -> list[Any]:
        return value if isinstance(value, list) else []

    base = raw.get("base")
    check("base", base)
    used = {base} if isinstance(base, str) else set()
    for i, bond in enumerate(as_list(raw.get("bonds"))):
        if not isinstance(bond, dict):
            continue
        refs = bond.get("experts", [bond.get("expert")] if "expert" in bond else [])
        for j, ref in enumerate(refs if isinstance(refs, list) else [refs]):
            if not isinstance(ref, str):
                continue
            check(f"bonds.{i}.experts.{j}", ref)
            if ref in used:
                errors.append(f"bonds.{i}.experts.{j}: expert {ref!r} is already part of the space")
            used.add(ref)
        for j, spec in enumerate(as_list(bond.get("pseudo"))):
            if isinstance(spec, dict) and spec.get("miner") is not None:
                check(f"bonds.{i}.pseudo.{j}.miner", spec["miner"])
    routed = raw.get("routed")
    if isinstance(routed, dict):
        members = as_list(routed.get("experts"))
        for j, ref in enumerate(members):
            check(f"routed.experts.{j}", ref)  # may repeat a target expert: OmniBind remaps ImageBind too
            if isinstance(ref, str) and ref in members[:j]:
                errors.append(f"routed.experts.{j}: expert {ref!r} is listed twice")
        inputs = routed.get("inputs")
        for m, refs in (inputs.items() if isinstance(inputs, dict) else []):
            for j, ref in enumerate(as_list(refs)):
                check(f"routed.inputs.{m}.{j}", ref)
        router = routed.get("router")
        miners = router.get("miners") if isinstance(router, dict) else None
        for pair, ref in (miners.items() if isinstance(miners, dict) else []):
            check(f"routed.router.miners.{pair}", ref)
    return errors


def _all_field_names() -> list[str]:
    models = [Recipe, DataConfig, WorldData, ImportData, ExpertConfig, BondConfig, PseudoDataset, MiningIndex, TrainConfig, EvalConfig, ExportConfig,
              UniBindConfig, RelativeConfig, RoutedConfig, RouterConfig]
    return sorted({n for m in models for n in m.model_fields} | {"import", "expert"})


def _format_pydantic(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(recipe)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(err["loc"][-1]), _all_field_names(), n=1)
            msg = "unknown field" + (f"; did you mean {near[0]!r}?" if near else "")
        lines.append(f"{loc}: {msg}")
    return lines


def validate_recipe(raw: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping; raise a RecipeError listing every problem with its field path."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of fields, got {type(raw).__name__}")
    errors: list[str] = []
    recipe = None
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        errors.extend(_format_pydantic(exc))
    errors.extend(_reference_errors(raw))
    if errors or recipe is None:
        listing = "\n".join(f"  - {e}" for e in errors)
        raise RecipeError(f"{source}: {len(errors)} error(s)\n{listing}")
    return recipe


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, but a key given twice in one mapping is an error (SafeLoader keeps the
    last silently) and an integer too long for Python's int-string limit is a YAML error with its
    line, not a ValueError."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<:` merges may be overridden by the mapping's own keys
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: SafeLoader reports it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"integer too long to read ({len(str(node.value))} characters)", node.start_mark) from None


RecipeLoader.add_constructor("tag:yaml.org,2002:int", RecipeLoader.construct_yaml_int)


def load_recipe(path: str | Path) -> tuple[Recipe, str]:
    """Read and validate a YAML recipe; returns the recipe and its text (exported verbatim)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the recipe as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise RecipeError(f"{path}: not a usable recipe: its YAML is nested too deeply") from None
    return validate_recipe(raw, str(path)), text
