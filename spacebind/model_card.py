"""The model card (README.md) written into every fused checkpoint."""
from __future__ import annotations

from typing import Any

from spacebind.bonds import BONDS
from spacebind.bonds.heads import head_summary
from spacebind.evaluation.report import records_markdown
from spacebind.space import Space


def _expert_rows(node: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    if node["type"] == "expert":
        rows.setdefault(node["name"], node)
        return
    _expert_rows(node["base"], rows)
    for child in node["experts"]:
        _expert_rows(child, rows)


def _bond_rows(node: dict[str, Any], out: list[str]) -> None:
    if node["type"] != "bond":
        return
    _bond_rows(node["base"], out)
    for child in node["experts"]:
        _bond_rows(child, out)
    lambdas = BONDS.entry(node["bond"]).factory.card_weights(node)
    heads = "; ".join(f"{k}: {head_summary(h)}" for k, h in node["heads"].items())
    out.append(f"| {node['index']} | {node['bond']} | {node['name']} | {node['dim']} | {lambdas} | {heads} |")


def model_card(space: Space, config: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """Markdown describing the fused space, its experts, bonds, metrics and how to load it."""
    experts: dict[str, dict[str, Any]] = {}
    _expert_rows(config["space"], experts)
    bonds: list[str] = []
    _bond_rows(config["space"], bonds)
    lines = [
        f"# {space.name}", "",
        f"A fused embedding space made with spacebind {config['spacebind_version']}: "
        f"`{space.formula()}`, {space.dim}-d, modalities {', '.join(space.modalities)}.", "",
        "## Experts (frozen; referenced, not copied)", "",
        "| name | source | dim | modalities | checkpoint | sha256 |", "|---|---|---|---|---|---|",
    ]
    for e in experts.values():
        sha = (e.get("sha256") or "")[:16]
        lines.append(f"| {e['name']} | {e['source']} | {e['dim']} | {', '.join(e['modalities'])} | {e.get('checkpoint') or '–'} | {sha} |")
    if bonds:
        lines += ["", "## Bonds (applied in this order)", "",
                  "| # | bond | space | dim | λ (weight of the projected side) | projectors |",
                  "|---|---|---|---|---|---|", *bonds]
    lines += ["", "## Metrics", "", records_markdown(metrics) if metrics else "No evaluation was run.", ""]
    lines += [
        "## Use", "", "```python", "import spacebind", "",
        'space = spacebind.load("path/to/this/directory")',
        f'emb = space.encode("{space.modalities[0]}", [...])  # Tensor[N, {space.dim}], unit-norm', "```", "",
    ]
    return "\n".join(lines)
