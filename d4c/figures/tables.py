"""``tables``: the result tables as plots — zero-shot top-1 against bit width, per method, for one model.

One panel per dataset; one colour per method (the paper's rows), solid with reconstruction and
dashed without; the points are the mean over seeds and the error bars the standard deviation over
seeds (sample standard deviation, none for a single seed). The FP accuracy is a horizontal line.
Bit widths are the configs' ``W<weight bits>A<activation bits>``, ordered by weight then
activation bits.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from d4c.errors import D4CError
from d4c.figures.names import row_name, sort_by_row
from d4c.figures.output import new_figure, row_color

RECON_CHOICES = ("both", "on", "off")


def _bits(row: dict[str, Any]) -> str:
    return f"W{row['w_bit']}A{row['a_bit']}"


def aggregate(rows: Sequence[dict[str, Any]], recon: str = "both", parameter: str = "results"
              ) -> dict[str, Any]:
    """Mean, sample std and seeds of top-1 (%) per dataset, method, reconstruction and bit width.

    ``rows`` are flat results (:func:`d4c.figures.sources.flat_row`); FP rows (no bit width) give
    each dataset's ``fp`` line.

    Raises:
        D4CError: two rows are the same cell and seed (other schedules, step counts or folders).
    """
    cells: dict[tuple, dict[int, float]] = {}
    fp: dict[str, dict[int, float]] = {}
    first: dict[tuple, str] = {}  # (cell, seed) -> the file that gave it
    for row in rows:
        if row["w_bit"] is None or row["method"] == "fp":
            key, target = (row["dataset"], "fp"), fp.setdefault(row["dataset"], {})
        elif (recon == "on" and not row["recon"]) or (recon == "off" and row["recon"]):
            continue
        else:
            key = (row["dataset"], row["method"], bool(row["recon"]), (row["w_bit"], row["a_bit"]))
            target = cells.setdefault(key, {})
        if (key, row["seed"]) in first:
            raise D4CError(f"{first[key, row['seed']]} and {row.get('path', '?')} are both the {row['method']} run "
                           f"of seed {row['seed']} at {_bits(row) if row['w_bit'] is not None else 'FP'} on "
                           f"{row['dataset']}{' with reconstruction' if row['recon'] else ''}; choose one with "
                           f"--gen_schedule, --recon_iters or fewer inputs.", parameter)
        first[key, row["seed"]] = str(row.get("path", "?"))
        target[row["seed"]] = 100 * row["acc1"]
    datasets: dict[str, Any] = {}
    for (dataset, method, with_recon, bits), by_seed in sorted(cells.items(), key=lambda kv: kv[0][3]):
        values = np.array([by_seed[s] for s in sorted(by_seed)])
        series = datasets.setdefault(dataset, {"bits": [], "series": {}, "fp": None})
        label = f"W{bits[0]}A{bits[1]}"
        if label not in series["bits"]:
            series["bits"].append(label)
        entry = series["series"].setdefault(f"{method}|{'recon' if with_recon else 'norecon'}",
                                            {"method": method, "recon": with_recon, "points": {}})
        entry["points"][label] = {"mean": float(values.mean()),
                                  "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                                  "seeds": sorted(by_seed), "values": values.tolist()}
    for dataset, by_seed in fp.items():
        values = np.array([by_seed[s] for s in sorted(by_seed)])
        datasets.setdefault(dataset, {"bits": [], "series": {}, "fp": None})["fp"] = {
            "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "seeds": sorted(by_seed)}
    for series in datasets.values():
        series["bits"].sort(key=lambda label: tuple(int(v) for v in label[1:].split("A")))
    return datasets


def tables_figure(rows: Sequence[dict[str, Any]], model: str, recon: str = "both", parameter: str = "results"
                  ) -> tuple[Any, dict[str, Any]]:
    """One panel per dataset and the aggregated numbers (``parameter``: the input named in errors)."""
    datasets = aggregate(rows, recon, parameter)
    names = sorted(datasets)
    figure = new_figure(6.5 * len(names), 4.8)
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for ax, dataset in zip(axes, names):
        info = datasets[dataset]
        positions = {label: i for i, label in enumerate(info["bits"])}
        series = sort_by_row(info["series"].values(), key=lambda s: s["method"])
        series.sort(key=lambda s: not s["recon"])
        count = max(len(series), 1)
        for index, entry in enumerate(series):
            labels = [b for b in info["bits"] if b in entry["points"]]
            offset = (index - (count - 1) / 2) * 0.02 * len(info["bits"])  # keeps error bars apart
            x = [positions[b] + offset for b in labels]
            ax.errorbar(x, [entry["points"][b]["mean"] for b in labels], yerr=[entry["points"][b]["std"] for b in labels],
                        color=row_color(entry["method"]), linestyle="-" if entry["recon"] else "--", marker="o",
                        markersize=4, capsize=3, linewidth=1.2,
                        label=f"{row_name(entry['method'])}{' + recon' if entry['recon'] else ''}")
        if info["fp"] is not None:
            ax.axhline(info["fp"]["mean"], color="black", linestyle=":", linewidth=1,
                       label=f"FP {info['fp']['mean']:.2f}")
        ax.set_xticks(range(len(info["bits"])))
        ax.set_xticklabels(info["bits"])
        ax.set_xlabel("bit width (weights, activations)", fontsize=8)
        ax.set_ylabel("zero-shot top-1 (%)", fontsize=8)
        seeds = sorted({s for e in info["series"].values() for p in e["points"].values() for s in p["seeds"]})
        ax.set_title(f"{model} on {dataset} (mean ± std over seeds {', '.join(map(str, seeds))})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    return figure, {"model": model, "recon": recon, "datasets": datasets}
