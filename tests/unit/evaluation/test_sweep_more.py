"""The sweep figure: each heatmap cell shows the change vs the current λ (score − baseline, in
points, signed) at (x = second parameter's value, y = first parameter's value); preset names keep
the task's direction."""
from spacebind.evaluation.sweep import SweepResult, preset_name, sweep_figure


def test_heatmap_cells_hold_the_signed_change_at_their_grid_point() -> None:
    grid = [0.0, 1.0]
    points = [{"text": a, "audio": b} for a in grid for b in grid]  # the order sweep evaluates them in
    task = "text→audio R@1"
    scores = {task: [0.5, 0.9, 0.3, 0.5]}  # text=0,audio=1 → +40; text=1,audio=0 → −20
    result = SweepResult(["text", "audio"], grid, points, scores, baseline={task: 0.5},
                         best={task: {"text": 0.0, "audio": 1.0}}, split="val", current={"text": 0.0, "audio": 0.0})
    (panel,) = [ax for ax in sweep_figure(result).axes if ax.get_title() == task]
    cells = {tuple(round(v) for v in t.get_position()): t.get_text() for t in panel.texts}
    assert cells[(1, 0)] == "+40.0"  # x: audio = 1.0, y: text = 0.0
    assert cells[(0, 1)] == "-20.0"  # x: audio = 0.0, y: text = 1.0
    assert cells[(0, 0)] == "+0.0" and cells[(1, 1)] == "+0.0"


def test_preset_names_keep_the_direction() -> None:
    assert preset_name("text→audio R@1") == "best:text-audio"
    assert preset_name("audio→text R@1") == "best:audio-text"
    assert preset_name("image zero-shot acc1") == "best:zeroshot-image"
