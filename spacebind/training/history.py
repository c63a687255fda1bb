"""Per-epoch training histories of a run's projectors, for the export (`history.json`, `history.png`).

The trainer keeps each run's history (loss, val recall@1, lr, temperature per epoch) in its
resumable state file (`spacebind.training.state`); `collect_histories` reads them back after a
run, keyed `bond<i>/<expert>/member<j>` (or `routed/<expert>/member<j>`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from spacebind.training.state import STATE_FILE, load_state

History = list[dict[str, Any]]


def collect_histories(heads_dir: Path, members: Mapping[str, int]) -> dict[str, History]:
    """The stored histories of the `members[key]` mixture members trained under `heads_dir / key`
    (`key` e.g. `bond0/audio_text`); closed-form heads have none and are left out."""
    out: dict[str, History] = {}
    for key, n in members.items():
        for j in range(n):
            saved = load_state(heads_dir / key / f"member{j}" / STATE_FILE, key=None)
            if saved is not None:
                out[f"{key}/member{j}"] = list(saved["state"]["history"])  # NaN (no val pairs): null in JSON
    return out


def plot_histories(histories: Mapping[str, History], path: Path) -> Path:
    """Training loss and val recall@1 against epoch, one line per member; saved as PNG."""
    from spacebind.evaluation.report import pyplot, save_figure

    plt = pyplot()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, rows in histories.items():
        epochs = [r["epoch"] + 1 for r in rows]
        loss_ax.plot(epochs, [r["loss"] for r in rows], label=key)
        val = [(e, r["val_recall@1"]) for e, r in zip(epochs, rows) if r.get("val_recall@1") is not None]
        if val:
            val_ax.plot([e for e, _ in val], [100 * v for _, v in val], label=key)
    loss_ax.set(title="training loss (InfoNCE)", xlabel="epoch", ylabel="loss")
    val_ax.set(title="validation recall@1", xlabel="epoch", ylabel="%")
    loss_ax.legend(fontsize=7)
    return save_figure(fig, path)
