"""The paper's tables (and the README's zoo tables) as :class:`~d4c.tables.render.Pivot` layouts.

Each layout turns the collected rows into sections ``(marker, markdown)``; a section with a
marker replaces the block between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` of the
``--md`` file (the README's zoo tables), the others are written one after another. Columns
follow the data: the paper's models and datasets first, then any others present (an open_clip
model, another dataset), so a variation of a sweep renders without a new layout.
"""

from __future__ import annotations

from typing import Callable

from d4c.tables.render import Gain, Pivot, Row, distinct, seeds_of, where

PAPER_MODELS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14",
                "tiny-vit", "tiny-rn")
PAPER_DATASETS = ("cifar10", "cifar100", "imagenet1k", "digits")
BITS = ("W4A4", "W4A8", "W6A6", "W8A8")
QUANTIZED_ROWS = (("real", "Real-data PTQ"), ("gaussian", "Gaussian noise"),
                  (("baseline", "bns", "pse"), "BNS / PSE"), ("d4c3", "D4C"))
ABLATION_ROWS = (("d4c0", "PGSI (config 0)"), ("d4c1", "PGSI + SCG (config 1)"), ("d4c2", "PGSI + PAE (config 2)"),
                 ("d4c3", "PGSI + SCG + PAE (config 3)"))
PAPER_GEN_SECONDS = {"bns": {"RN50": 1280, "RN50x16": 9515}, "pse": {"ViT-B/32": 3488, "ViT-B/16": 44398},
                     "d4c3": {"RN50": 1623, "RN50x16": 12491, "ViT-B/32": 1434, "ViT-B/16": 5346}}
"""Generation of 128 images, batch 16 (PSE on ViT-B/16: batch 8), seconds on an RTX A6000 (the paper)."""

Section = tuple[str | None, str]


def _ordered(values: list[str], first: tuple[str, ...]) -> list[str]:
    return [v for v in first if v in values] + [v for v in values if v not in first]


def _quantized(row: Row) -> bool:
    return row.get("task") == "zeroshot_classification"


def _model_dataset_columns(records: list[Row]) -> list[tuple[str, Callable[[Row], bool]]]:
    models = _ordered(distinct(records, _quantized, "model"), PAPER_MODELS)
    datasets = _ordered(distinct(records, _quantized, "dataset"), PAPER_DATASETS)
    present = {(r["model"], r["dataset"]) for r in records if _quantized(r)}
    return [(f"{m} {d}", where(model=m, dataset=d)) for m in models for d in datasets if (m, d) in present]


def _bits_present(records: list[Row]) -> list[str]:
    return _ordered([b for b in distinct(records, _quantized, "bits") if b != "FP"], BITS)


def _seed_note(records: list[Row], test: Callable[[Row], bool]) -> str:
    seeds = seeds_of(records, test)
    return "no runs" if not seeds else f"seed {seeds[0]}" if len(seeds) == 1 else \
        f"mean ± std over seeds {', '.join(map(str, seeds))}"


def _rows_by_recon(rows: tuple, records: list[Row], bits: str) -> list[tuple]:
    """A row per paper row with --recon, and the same without it where such runs exist."""
    out = []
    for recon in (True, False):
        for method, label in rows:
            out.append(([label + ("" if recon else " (no recon)")], where(method=method, bits=bits, recon=recon)))
    return out


def main_layout(records: list[Row], rows: tuple = QUANTIZED_ROWS, fp: bool = True, gain: bool = True) -> list[Section]:
    """Rows = methods, columns = model × dataset, one block per bit width; D4C's gain over the baseline."""
    columns = _model_dataset_columns(records)
    sections = []
    for bits in _bits_present(records):
        table_rows = ([(["FP"], where(method="fp"))] if fp else []) + _rows_by_recon(rows, records, bits)
        gains = [Gain(["D4C − BNS / PSE"], "D4C", "BNS / PSE")] if gain else []
        pivot = Pivot(["method"], table_rows, columns, select=_quantized, gains=gains, skip_empty_rows=True)
        test = where(bits=bits)
        sections.append((None, f"**{bits}** — zero-shot top-1 (%), {_seed_note(records, test)}\n\n"
                               + pivot.render(records)))
    return sections


def ablation_layout(records: list[Row]) -> list[Section]:
    """D4C's components: configs 0-3 as rows, model × dataset columns, one block per bit width."""
    return main_layout(records, rows=ABLATION_ROWS, fp=False, gain=False)


def gen_time_layout(records: list[Row]) -> list[Section]:
    """Seconds of generation per method (rows) and model (columns), with the paper's A6000 figures."""
    generation = where(task="generation")
    models = _ordered(distinct(records, generation, "model"), PAPER_MODELS)
    columns = [(m, where(model=m)) for m in models]
    rows = [(["BNS"], where(generation_method="bns")), (["PSE"], where(generation_method="pse")),
            (["D4C"], where(generation_method="d4c3"))]
    pivot = Pivot(["method"], rows, columns, select=generation, value="generation_seconds", scale=1.0, digits=0,
                  skip_empty_rows=True)
    batches = ", ".join(f"{m} {b}" for m in models for b in distinct(records, where(task="generation", model=m),
                                                                     "arg_gen_batch_size"))
    devices = ", ".join(distinct(records, generation, "device_name")) or "—"
    paper = " | ".join(f"{name.upper() if name != 'd4c3' else 'D4C'}: " +
                       ", ".join(f"{m} {s:,}" for m, s in figures.items()) for name, figures in PAPER_GEN_SECONDS.items())
    return [(None, f"Generation seconds ({distinct(records, generation, 'calibration_images') or ['?']} images; "
                   f"mini-batch per model: {batches or '—'}; device: {devices}; {_seed_note(records, generation)})\n\n"
                   + pivot.render(records) + f"\n\nThe paper (RTX A6000, 128 images, batch 16; PSE on ViT-B/16 batch 8): "
                   f"{paper}.")]


def _zoo_ptq(records: list[Row]) -> str:
    ptq = where(block="ptq")
    fp_pivot = Pivot([], [], [], select=lambda r: ptq(r) and _quantized(r))
    models = _ordered(distinct(records, ptq, "model"), PAPER_MODELS)
    steps = sorted({int(r["recon_iters"]) for r in records if ptq(r) and r.get("recon") and r.get("recon_iters")})
    rows = []
    for model in models:
        fp = fp_pivot.format(fp_pivot.values(records, where(model=model, method="fp")))
        for data, label in (("real", "real (train split)"), ("gaussian", "Gaussian noise")):
            rows.append(([f"`{model}`", fp, label, "no"], where(model=model, method=data, recon=False)))
            for n in steps:
                rows.append(([f"`{model}`", fp, label, f"{n} steps"], where(model=model, method=data, recon=True,
                                                                        recon_iters=n)))
    columns = [(b, where(bits=b)) for b in _ordered([b for b in distinct(records, ptq, "bits") if b != "FP"], BITS)]
    pivot = Pivot(["model", "FP", "calibration data", "recon"], rows, columns, select=lambda r: ptq(r) and _quantized(r),
                  skip_empty_rows=True)
    seeds = "; ".join(f"{b}: {_seed_note(records, lambda r, b=b: ptq(r) and r.get('bits') == b)}" for b, _ in columns)
    images = distinct(records, lambda r: ptq(r) and r.get("method") == "real", "calibration_images")
    texts = distinct(records, lambda r: ptq(r) and r.get("method") == "real", "calibration_texts")
    only_w4a8 = [n for n in steps if {r["bits"] for r in records if ptq(r) and r.get("recon_iters") == n} == {"W4A8"}]
    note = (f"Zero-shot top-1 (%) on `digits` (539 test images); {seeds}; FP: one run (deterministic). Calibration "
            f"on {', '.join(images) or '?'} images and {', '.join(texts) or '?'} texts, observers and quantizers of the "
            f"shipped configs; `--recon` with {' or '.join(f'`--recon_iters {n}`' for n in steps)} steps per unit"
            + (f" (the {', '.join(map(str, only_w4a8))}-step rows reconstruct only W4A8: — elsewhere)"
               if only_w4a8 else "") + ". Made by `d4c-sweep exp/sweeps/zoo.yaml` (block `ptq`), rendered by "
            "`d4c-results build results/sweeps/zoo --table zoo --md README.md`.")
    timing_rows = []
    for model in models:
        timing_rows.append(([f"`{model}`", "calibration (no recon)"], where(model=model, method="real", recon=False),
                            "time_calibration"))
        if steps:
            timing_rows.append(([f"`{model}`", f"reconstruction ({steps[0]} steps)"],
                                where(model=model, method="real", recon=True, recon_iters=steps[0]),
                                "time_reconstruction"))
    timing = Pivot(["model", "stage"], timing_rows, columns, select=lambda r: ptq(r) and _quantized(r), scale=1.0,
                   digits=1, skip_empty_rows=True)
    devices = ", ".join(distinct(records, ptq, "device_name")) or "?"
    return (note + "\n\n" + pivot.render(records) + f"\n\nStage times (s, {devices}; real-data runs, "
            f"mean over the seeds above):\n\n" + timing.render(records))


LATER_ROWS = {"enhancing_dfq": ("EnhancingDFQ (seed 003's generator)", "generator steps")}
"""Label and ``gen_iter`` unit of the zoo's data-free rows beyond the D4C paper's."""


def _zoo_dfq(records: list[Row]) -> str:
    dfq = where(block="dfq")
    fp_run = lambda r: where(block="ptq", method="fp")(r) and _quantized(r)  # noqa: E731
    select = lambda r: (dfq(r) and _quantized(r)) or fp_run(r)  # noqa: E731
    models = _ordered(distinct(records, dfq, "model"), PAPER_MODELS)
    bits = _ordered([b for b in distinct(records, dfq, "bits") if b != "FP"], ("W4A8", "W4A4", "W6A6", "W8A8"))
    schedules = _ordered(distinct(records, lambda r: dfq(r) and r.get("generation_method") not in ("", None),
                                  "gen_schedule"), ("reference", "batched"))
    rows: list[tuple] = [(["FP (no quantization)", "–"], where(method="fp")),
                         (["Real-data PTQ (train images)", "–"], where(method="real")),
                         (["Gaussian noise", "–"], where(method="gaussian"))]
    generated = [(("baseline", "bns", "pse"), "BNS (tiny-rn) / PSE (tiny-vit)")]
    generated += [(f"d4c{k}", f"D4C config {k} ({name})") for k, name in
                  enumerate(("PGSI", "PGSI + SCG", "PGSI + PAE", "PGSI + SCG + PAE"))]
    others = [m for m in distinct(records, dfq, "method") if m not in
              ("fp", "real", "gaussian", "baseline", "bns", "pse", "d4c0", "d4c1", "d4c2", "d4c3")]
    later = {m: LATER_ROWS.get(m, (m, "iterations")) for m in others}
    generated += [(m, label) for m, (label, _) in later.items()]  # methods added later (enhancing_dfq, ...)
    for method, label in generated:
        for schedule in schedules:
            rows.append(([label, schedule], where(method=method, gen_schedule=schedule)))
    gains = [Gain(["D4C config 3 − baseline", s], f"D4C config 3 (PGSI + SCG + PAE) | {s}",
                  f"BNS (tiny-rn) / PSE (tiny-vit) | {s}") for s in schedules]
    columns = [(f"{m} {b}", lambda r, m=m, b=b: r.get("model") == m and r.get("bits") in (b, "FP"))
               for m in models for b in bits]
    pivot = Pivot(["row", "schedule"], rows, columns, select=select, gains=gains, skip_empty_rows=True)
    seeds = "; ".join(f"{b}: {_seed_note(records, lambda r, b=b: dfq(r) and r.get('bits') == b)}" for b in bits)
    # Gaussian noise records carry the default --gen_iter, which it never uses: only generated rows count.
    gen_iter = distinct(records, lambda r: dfq(r) and r.get("generation_method") not in ("", None, "gaussian")
                        and r.get("method") not in others, "gen_iter")
    later_iters = "".join(f"; {label}: {', '.join(distinct(records, where(block='dfq', method=m), 'gen_iter'))} {unit}"
                          for m, (label, unit) in later.items())
    steps = distinct(records, lambda r: dfq(r) and r.get("recon"), "recon_iters")
    images = distinct(records, dfq, "calibration_images")
    note = (f"Top-1 (%) on `digits` test; {seeds}. Quantized rows with `--recon` ({', '.join(steps) or '?'} "
            f"reconstruction steps per unit), {', '.join(images) or '?'} calibration images (generated: "
            f"{', '.join(gen_iter) or '?'} iterations{later_iters}, "
            "`--custom_file d4c/template/digits_classnames_templates.json`); "
            "FP is the PTQ table's run. Made by `d4c-sweep exp/sweeps/zoo.yaml` (block `dfq`), rendered by "
            "`d4c-results build results/sweeps/zoo --table zoo --md README.md`.")
    return note + "\n\n" + pivot.render(records)


def zoo_layout(records: list[Row]) -> list[Section]:
    """The README's two zoo tables, each between its markers."""
    return [("ptq-table", _zoo_ptq(records)), ("dfq-table", _zoo_dfq(records))]


LAYOUTS: dict[str, Callable[[list[Row]], list[Section]]] = {
    "main": main_layout, "ablation": ablation_layout, "gen_time": gen_time_layout, "zoo": zoo_layout}


def render_sections(table: str, records: list[Row]) -> list[Section]:
    return LAYOUTS[table](records)


def as_markdown(sections: list[Section]) -> str:
    return "\n\n".join(text for _, text in sections) + "\n"
