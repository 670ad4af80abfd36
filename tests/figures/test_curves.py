"""``curves``: generation losses from the cache, reconstruction losses from result files."""

from __future__ import annotations

import json

import torch

from d4c.figures import curves
from d4c.figures.cli import main
from d4c.figures.sources import cache_entries
from tests.figures.helpers import write_result

UNITS = [{"name": "visual.transformer.resblocks.0.attn.q_proj", "error_before": 2.0, "error_after": 1.0},
         {"name": "visual.transformer.resblocks.0.mlp.c_fc", "error_before": 4.0, "error_after": 5.0},
         {"name": "transformer.resblocks.0.attn.q_proj", "error_before": 0.5, "error_after": 0.25}]


def test_the_cli_plots_the_cached_histories_and_the_units(figure_cache, tmp_path):
    folder, outcomes = figure_cache
    result = write_result(tmp_path, "r", units=UNITS)
    out = tmp_path / "curves.png"
    assert main(["curves", "--cache", str(folder), "--model", "tiny-vit", "--results", str(result),
                 "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    for entry in data["generation"]:
        stored = torch.load(entry["cache_file"], weights_only=True)["loss_history"]
        assert entry["loss"] == stored.tolist() == outcomes[entry["method"]].loss_history.tolist()
        assert len(entry["loss"]) == 3
    image, text = data["reconstruction"]
    assert (image["tower"], text["tower"]) == ("image", "text")
    assert image["sum_before"] == 6.0 and image["sum_after"] == 6.0 and image["units_improved"] == 1
    assert [u["name"] for u in text["units"]] == ["transformer.resblocks.0.attn.q_proj"]


def test_one_panel_per_method_and_per_tower_with_labelled_axes(figure_cache, tmp_path):
    folder, _ = figure_cache
    entries = cache_entries(folder, "tiny-vit")
    record = json.loads(write_result(tmp_path, "r", units=UNITS).read_text())
    figure, _ = curves.curves_figure(entries, [record])
    assert len(figure.axes) == len(entries) + 2
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in figure.axes)
    assert [ax.get_xlabel() for ax in figure.axes[-2:]] == ["image encoder unit (forward order)",
                                                            "text encoder unit (forward order)"]
    assert figure.axes[-2].get_yscale() == "log"
    only_units, _ = curves.curves_figure([], [record])
    assert len(only_units.axes) == 2


def test_entries_cached_without_a_history_are_left_out_with_a_sentence(figure_cache, tmp_path, capsys):
    folder, _ = figure_cache
    old = tmp_path / "old"
    old.mkdir()
    for path in folder.glob("*d4c0*"):
        target = old / path.name
        target.write_bytes(path.read_bytes())
        if path.suffix == ".pt":
            stored = torch.load(target, weights_only=True)
            del stored["loss_history"]
            torch.save(stored, target)
    out = tmp_path / "c.png"
    assert main(["curves", "--cache", str(old), "--model", "tiny-vit", "-o", str(out)]) == 2
    assert "holds no loss history" in capsys.readouterr().err and not out.exists()
    # with result files the reconstruction panels are drawn, and stderr says why the generation ones are not
    write_result(tmp_path, "r", method="d4c3", units=[{"name": "visual.transformer.resblocks.0.mlp.c_fc",
                                                        "error_before": 2.0, "error_after": 1.0}])
    assert main(["curves", "--cache", str(old), "--model", "tiny-vit", "--results", str(tmp_path / "r.json"),
                 "-o", str(out)]) == 0
    assert "drawing the reconstruction losses only" in capsys.readouterr().err
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["generation"] == [] and data["reconstruction"][0]["sum_after"] == 1.0
