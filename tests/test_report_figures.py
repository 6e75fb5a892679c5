"""Report and comparison figures fit for a talk: labelled colourbars on every field, axis coordinates,
no empty panels, no overlapping tick labels, titles in words, errors above 1 flagged, and the
Navier–Stokes report draws true vs recovered w₀."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import conv_fields_config, write_shifted_vorticity  # noqa: E402

from pdegrow.comparison.figures import log_axis, panel_title  # noqa: E402
from pdegrow.contract_metadata import structured_grid_index  # noqa: E402
from pdegrow.growth.topological_report import plot_topological_history  # noqa: E402
from pdegrow.report_fields import chosen_states, fields_figure, layer_evolution_figure, layer_title  # noqa: E402
from pdegrow.reporting import growth_changes_figure, growth_phase_changes  # noqa: E402


def unit_square_mesh(n: int = 6) -> dict[str, np.ndarray]:
    xs = np.linspace(0, 1, n + 1)
    X, Y = np.meshgrid(xs, xs)
    nodes = np.stack([X.ravel(), Y.ravel()], 1)
    index = structured_grid_index(nodes)
    cells = []
    for j in range(n):
        for i in range(n):
            a, b, c, d = index[j, i], index[j, i + 1], index[j + 1, i], index[j + 1, i + 1]
            cells += [[a, b, d], [a, d, c]]
    return {"nodes": nodes, "cells": np.asarray(cells), "sensors": np.array([[0.3, 0.3], [0.7, 0.5]])}


def colorbar_axes(fig: Any) -> list[Any]:
    return [m.colorbar.ax for ax in fig.axes for m in (*ax.images, *ax.collections)
            if getattr(m, "colorbar", None) is not None]


def field_axes(fig: Any) -> list[Any]:
    bars = colorbar_axes(fig)
    return [ax for ax in fig.axes if ax not in bars]


def mappables(ax: Any) -> list[Any]:
    return [m for m in (*ax.images, *ax.collections) if m.get_array() is not None]


def assert_talk_ready(fig: Any) -> None:
    """Every field panel draws something, has x/y coordinates, and its colour scale is shown by a
    labelled colourbar (its own or one it shares with the same scale and colour map)."""
    bars = [m.colorbar for ax in fig.axes for m in mappables(ax) if getattr(m, "colorbar", None) is not None]
    assert bars, "no colourbar"
    assert all(b.ax.get_ylabel().strip() for b in bars), "a colourbar without a label"
    fig.canvas.draw()
    for ax in field_axes(fig):
        drawn = mappables(ax)
        assert drawn, f"an empty panel: {ax.get_title()!r}"
        assert ax.get_xlabel() == "x" and [t for t in ax.get_xticklabels() if t.get_text()]
        assert [t for t in ax.get_yticklabels() if t.get_text()]
        for m in drawn:
            same = [b for b in bars if b.mappable.get_clim() == m.get_clim()
                    and b.mappable.get_cmap().name == m.get_cmap().name]
            assert same, f"{ax.get_title()!r}: its colour scale has no colourbar"


def test_heat_fields_figure_and_the_flag_above_one() -> None:
    geom = unit_square_mesh()
    rng = np.random.default_rng(0)
    true = rng.standard_normal((2, len(geom["nodes"])))
    pred = np.stack([0.8 * true[0], -true[1]])                   # relative errors 0.2 and 2
    fig = fields_figure(true, pred, geom, np.array([3, 9]))
    assert_talk_ready(fig)
    titles = [ax.get_title() for ax in field_axes(fig)]
    assert "true m, test sample 3" in titles
    assert any("rel. error 0.200" in t and "worse" not in t for t in titles)
    assert any("rel. error 2.000" in t and "worse than the prior mean" in t for t in titles)
    plt.close(fig)


def test_image_fields_figure_on_the_grid() -> None:
    r = 8
    gx, gy = np.meshgrid(np.arange(r) / r, np.arange(r) / r)
    true = np.stack([np.sin(2 * np.pi * gx), np.cos(2 * np.pi * gy)])
    fig = fields_figure(true, 0.9 * true, {"grid_x": gx, "grid_y": gy}, np.array([0, 1]),
                        "initial vorticity w₀", "w₀")
    assert_talk_ready(fig)
    im = field_axes(fig)[0].images[0]
    left, right, bottom, top = im.get_extent()
    assert left == pytest.approx(-1 / 16) and right == pytest.approx(1 - 1 / 16)   # pixels centred on nodes
    plt.close(fig)


def test_layer_evolution_is_one_row_with_the_truth_and_one_colourbar() -> None:
    geom = unit_square_mesh()
    true = np.linspace(-1, 1, len(geom["nodes"]))
    labels = ["lift", "layer 1", "layer 2", "+SRL 1"]
    fields = [true * s for s in (0.1, 0.5, 0.8, 0.95)]
    fig = layer_evolution_figure(labels, fields, true, geom, sample=4)
    assert_talk_ready(fig)
    panels = field_axes(fig)
    assert len(panels) == 5 and len(colorbar_axes(fig)) == 1
    assert len({round(ax.get_position().y0, 6) for ax in panels}) == 1, "not one row"
    assert panels[0].get_title() == "true (test sample 4)"
    assert [ax.get_title().split("\n")[0] for ax in panels[1:]] == \
        ["lift only", "after layer 1", "after layer 2", "+ SRL corrector 1"]
    plt.close(fig)


def test_layer_titles_and_state_choice() -> None:
    assert layer_title("layer 12") == "after layer 12" and layer_title("+SRL 3") == "+ SRL corrector 3"
    assert chosen_states(5) == [0, 1, 2, 3, 4]
    picked = chosen_states(30)
    assert picked[0] == 0 and picked[-1] == 29 and len(picked) <= 9


def event(epoch: int, predicted: float | None, realised: float, action: str = "insert") -> dict[str, Any]:
    return {"epoch": epoch, "predicted_change": predicted, "realised_change": realised,
            "where": {"action": action}}


def test_growth_changes_of_exact_growth_show_the_phase_gains() -> None:
    """Layerwise identity blocks change nothing at the event: the bars were all zero (an empty
    chart); the figure shows the loss change of the training that followed each event instead."""
    events = [event(2, 0.0, 0.0), event(4, 0.0, 0.0, "corrector")]
    rows = [{"epoch": e, "train_loss": 1.0 / (1 + e)} for e in range(7)]
    assert growth_phase_changes(events, rows) == pytest.approx([1 / 4 - 1 / 3, 1 / 7 - 1 / 5])
    fig = growth_changes_figure(events, rows)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert len(heights) == 2 and all(h < 0 for h in heights)
    assert "kept the function exactly" in fig.axes[0].get_title()
    plt.close(fig)
    assert growth_changes_figure(events, []) is None              # nothing to show: no figure


def test_growth_changes_predicted_vs_realised() -> None:
    fig = growth_changes_figure([event(3, -0.1, -0.08), event(6, None, -0.02)])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([-0.1, 0.0, -0.08, -0.02])
    plt.close(fig)


def overlapping_ticklabels(fig: Any) -> list[tuple[str, str]]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pairs = []
    for ax in fig.axes:
        for labels in (ax.get_xticklabels() + ax.get_xticklabels(minor=True),
                       ax.get_yticklabels() + ax.get_yticklabels(minor=True)):
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels
                     if t.get_text() and t.get_visible()]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    if boxes[i][1].overlaps(boxes[j][1]):
                        pairs.append((boxes[i][0], boxes[j][0]))
    return pairs


def test_log_axis_over_less_than_a_decade_has_no_overlapping_labels() -> None:
    """The study-ns-conv error_vs_params panels (1.2e3 … 2.4e3 parameters) had overlapping minor labels."""
    def panel(fix: bool) -> Any:
        fig, ax = plt.subplots(figsize=(5.2, 4.0))
        ax.scatter([1230, 1240, 2410, 2420], [0.08, 0.085, 0.081, 0.083])
        if fix:
            log_axis(ax)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        else:
            ax.set_xscale("log")
        return fig

    before, after = panel(False), panel(True)
    assert overlapping_ticklabels(before), "the check does not see the old overlap"
    assert overlapping_ticklabels(after) == []
    assert [t.get_text() for t in after.axes[0].get_xticklabels() if t.get_text()]
    plt.close(before)
    plt.close(after)


def test_topological_history_labels_do_not_overlap(tmp_path: Path) -> None:
    evs = [{"epoch": 20, "predicted_change": -2e-6, "realised_change": -9.8e-5,
            "info": {"derivative": [0.128, 0.068], "t_star": 0}},
           {"epoch": 40, "predicted_change": -1.5e-5, "realised_change": -1.03e-4,
            "info": {"derivative": [0.122, 0.126, 0.127], "t_star": 2}}]
    shown: list[Any] = []
    real_close = plt.close
    plt.close = lambda fig=None: shown.append(fig)               # keep the figure to inspect it
    try:
        plot_topological_history(evs, tmp_path / "topo.png")
    finally:
        plt.close = real_close
    fig = shown[0]
    assert overlapping_ticklabels(fig) == []
    assert "×$10^{-6}$" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_panel_titles_in_words() -> None:
    assert panel_title("T0_2") == "T = 0.2"
    assert panel_title("T1") == "T = 1"
    assert panel_title("T5") == "T = 5"
    assert panel_title("heat-paper") == "heat-paper"
    assert panel_title("ns_sensors") == "ns sensors"


def test_report_of_a_navier_stokes_run_draws_w0(tmp_path: Path) -> None:
    from pdegrow.cli import main

    r, n = 8, 24
    path = tmp_path / "ns.h5"
    gx, gy = np.meshgrid(np.arange(r) / r, np.arange(r) / r)
    write_shifted_vorticity(path, r, n, config={"resolution": r},
                            static={"geometry/grid_x": gx, "geometry/grid_y": gy})
    cfg = tmp_path / "conv.toml"
    cfg.write_text(conv_fields_config())
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(path), "--out", str(run), "--no-progress"]) == 0
    assert main(["report", str(run)]) == 0
    report = run / "report"
    assert (report / "fields.png").stat().st_size > 10_000
    assert (report / "layer_evolution.png").is_file()
    assert "![fields](fields.png)" in (report / "report.md").read_text()


def test_a_compare_panel_without_runs_says_so() -> None:
    from pdegrow.comparison.figures import _legend_or_note

    fig, (empty, full) = plt.subplots(1, 2)
    full.plot([1, 2], [3, 4], label="fixed")
    _legend_or_note(empty)
    _legend_or_note(full)
    assert [t.get_text() for t in empty.texts] == ["no finished run yet"] and empty.get_legend() is None
    assert full.get_legend() is not None and not full.texts
    plt.close(fig)
