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


def _bond_rows(node: dict[str, Any], out: list[str], fitted: list[str]) -> None:
    if node["type"] != "bond":
        return
    _bond_rows(node["base"], out, fitted)
    for child in node["experts"]:
        _bond_rows(child, out, fitted)
    fitted += _fitted_lines(node)
    lambdas = BONDS.entry(node["bond"]).factory.card_weights(node)
    heads = "; ".join(f"{k}: {head_summary(h)}" for k, h in node["heads"].items())
    out.append(f"| {node['index']} | {node['bond']} | {node['name']} | {node['dim']} | {lambdas} | {heads} |")


def _fitted_lines(node: dict[str, Any]) -> list[str]:
    """What training chose for a bond, and why: target modalities per member, λ on val."""
    choices = node.get("choices") or {}
    lines = []
    for member, t in (choices.get("targets") or {}).items():
        why = f" ({t['measure']} of the target's modalities: " + ", ".join(
            f"{m} {100 * v:.1f}" for m, v in t["reliability"].items()) + ")" if t.get("reliability") else ""
        lines.append(f"- bond {node['index']}, {member}: pairing `{t['pairing']}`, targets {', '.join(t['kept'])}{why}")
    lam = choices.get("lambdas")
    if lam:
        chosen = ", ".join(f"{m} {v:g}" for m, v in lam["lambdas"].items())
        coarse = ", ".join(f"{m} {v:g}" for m, v in lam["coarse"].items())
        verdict = "kept the coarse λ" if lam["lambdas"] == lam["coarse"] else "chose"
        worst = min(lam["margins"].items(), key=lambda kv: kv[1]) if lam["margins"] else None
        lines.append(f"- bond {node['index']}, λ on the {lam['split']} split: {verdict} {chosen} (coarse {coarse}; "
                     f"better than the coarse λ in {100 * lam['confidence']:.0f} % of bootstrap resamples)"
                     + (f"; worst margin over its parts: {worst[0]} {100 * worst[1]:+.1f} points" if worst else ""))
    return lines


def model_card(space: Space, config: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """Markdown describing the fused space, its experts, bonds, metrics and how to load it."""
    experts: dict[str, dict[str, Any]] = {}
    _expert_rows(config["space"], experts)
    bonds: list[str] = []
    fitted: list[str] = []
    _bond_rows(config["space"], bonds, fitted)
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
    if fitted:
        lines += ["", "## How the bonds were fitted", "", *fitted]
    lines += ["", "## Metrics", "", records_markdown(metrics) if metrics else "No evaluation was run.", ""]
    lines += [
        "## Use", "", "```python", "import spacebind", "",
        'space = spacebind.load("path/to/this/directory")',
        f'emb = space.encode("{space.modalities[0]}", [...])  # Tensor[N, {space.dim}], unit-norm', "```", "",
    ]
    return "\n".join(lines)
