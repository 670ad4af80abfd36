"""A sweep's plan: every cell's ``d4c-quant`` command and result file, and the generations cells share.

Pseudo images depend on the model, the generation settings, the prompts and the seed, not on the
dataset or the bit width; cells with the same generation signature share one *generation job*
(``d4c-quant ... --gen_only``) that runs first and leaves the images in the cache, where the
cells find them. A cell is done when its result JSON exists and was made with the cell's flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import string
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d4c.cli import build_parser, row_argv
from d4c.config import DFQ, MODEL, RUN_ROWS, RunConfig
from d4c.data.datasets import DATASET_NAMES
from d4c.data.prompts import load_prompt_file
from d4c.errors import D4CError
from d4c.generation.methods import BASELINE, method_class
from d4c.generation.rows import generation_rows
from d4c.generation.lock import EntryLock
from d4c.io import resolve_resource, slug, write_json
from d4c.models.architectures import RANDOM_PREFIX
from d4c.models.loading import accepted_model_names
from d4c.quantization.qconfig import load_qconfig, write_derived_qconfig
from d4c.results import OUTPUT_KEYS, output_path
from d4c.sweep.manifest import ROW, Block, Manifest, collapse_flags, expand_block, grid_flag_names, matches

ENVIRONMENT_FLAGS = ("output", "skip_existing", "dataset_root", "model_cache_dir", "gen_cache_dir", "device",
                     "num_workers", "batch_size", "gen_ckpt_every", "img_path", "gen_force")
"""Flags that say where files are or how fast a run goes, not what it computes: a result made with other values
still counts as the cell's."""


@dataclass
class Cell:
    """One run of the table: a ``d4c-quant`` command writing one result JSON."""

    name: str
    """The result file relative to the sweep folder, without ``.json`` (also names the log)."""
    blocks: list[str]
    flags: dict[str, Any]
    """The manifest's flags of the cell (``row`` included), after collapsing."""
    argv: list[str]
    """``d4c-quant`` flags, ``--output`` last."""
    output: Path
    config: RunConfig
    generation: str | None = None
    """The generation job whose images it reuses (None: no pseudo images, or the cell is a generation itself)."""


@dataclass
class Generation:
    """A ``d4c-quant --gen_only`` job making the pseudo images of the cells that share its signature."""

    name: str
    argv: list[str]
    output: Path
    cells: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """Every cell and generation of a sweep, with the sweep folder."""

    manifest: Manifest
    out: Path
    cells: list[Cell]
    generations: list[Generation]
    configs: dict[str, tuple[Path, dict[str, Any]]]
    """Derived configs: name -> (file under the sweep folder, spec)."""

    def write_configs(self) -> None:
        """Write the derived quantization configs the cells name (before any cell runs)."""
        for path, spec in self.configs.values():
            write_derived_qconfig(path, resolve_resource(spec["root"]),
                                  {k: v for k, v in spec.items() if k != "root"},
                                  comment=f"derived by d4c-sweep from {self.manifest.path}")

    def as_dict(self) -> dict[str, Any]:
        """The plan as written to ``<sweep>/plan.json`` (d4c-results reads the cells' blocks from it)."""
        return {"manifest": str(self.manifest.path), "name": self.manifest.name, "table": self.manifest.table,
                "description": self.manifest.description,
                "cells": [{"name": c.name, "blocks": c.blocks, "flags": c.flags, "output": str(c.output),
                           "command": command_line(c.argv), "generation": c.generation} for c in self.cells],
                "generations": [{"name": g.name, "output": str(g.output), "command": command_line(g.argv),
                                 "cells": g.cells} for g in self.generations]}


PLAN_FILE = "plan.json"


def write_plan(plan: Plan) -> Path:
    """Write ``<sweep>/plan.json`` (d4c-results reads each result's sweep, block and cell from it), keeping the
    cells and generations other invocations wrote there: sweeps of other manifests or ``--only`` selections that
    share the folder (concurrent ones wait for each other's update)."""
    path = plan.out / PLAN_FILE
    doc = plan.as_dict()
    plan.out.mkdir(parents=True, exist_ok=True)
    with EntryLock(path.with_name(PLAN_FILE + ".lock"), poll_s=0.2):
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        for key in ("cells", "generations"):
            mine = {entry["output"] for entry in doc[key]}
            doc[key] = [e for e in old.get(key, []) if isinstance(e, dict) and e.get("output") not in mine] + doc[key]
        write_json(path, doc)
    return path


def command_line(argv: list[str]) -> str:
    """The shell command of ``d4c-quant`` flags (quoted where needed)."""
    import shlex

    return " ".join(["d4c-quant", *map(shlex.quote, argv)])


class _Flags:
    """The main parser's flags: how a value becomes argv, and which ``--help`` group a flag is in."""

    def __init__(self) -> None:
        self.parser = build_parser()
        self.parser.exit_on_error = False
        self.actions = {a.dest: a for a in self.parser._actions if a.option_strings and a.dest != "help"}
        self.groups = {a.dest: g.title for g in self.parser._action_groups for a in g._group_actions}
        self.names = sorted(self.actions)

    def argv(self, name: str, value: Any) -> list[str]:
        action = self.actions[name]
        option = action.option_strings[0]
        if value is None or value is False and action.nargs == 0:
            return []
        if action.nargs == 0:  # a switch
            return [option]
        if isinstance(value, list):
            return [part for v in value for part in (option, str(v))]
        return [option, str(value)]


def _known_model(name: str) -> bool:
    return name in accepted_model_names() or name.startswith(RANDOM_PREFIX) or Path(name).expanduser().is_file()


class Planner:
    """Expands a manifest into a :class:`Plan`, checking every flag, value, model, dataset, config and file."""

    def __init__(self, manifest: Manifest, out: Path, overrides: dict[str, Any] | None = None,
                 only: dict[str, list[Any]] | None = None, seeds: list[int] | None = None) -> None:
        self.manifest, self.out = manifest, Path(out)
        self.overrides, self.only, self.seeds = overrides or {}, only or {}, seeds
        self.flags = _Flags()
        self.rows = list(RUN_ROWS) + generation_rows()
        self._qconfigs: dict[tuple[str, Any], Any] = {}
        self._checked_files: set[tuple[str, str]] = set()
        self._derived: dict[str, str] = {}  # a derived config's file -> its name
        self._scratch = Path()  # derived configs are written here to be checked (a temporary folder per plan())

    # -- checks -----------------------------------------------------------------------------------------
    def _check_names(self, keys: Any, where: str) -> None:
        for key in keys:
            if key != ROW and key not in self.flags.actions:
                import difflib

                hint = difflib.get_close_matches(key, self.flags.names + [ROW], 1)
                raise self.manifest.fail(f"{where}.{key}" if where else key, "is not a flag of d4c-quant" +
                                         (f" (did you mean {hint[0]}?)." if hint else "."))

    def _origin(self, block: Block, key: str) -> str:
        if key in self.overrides:
            return f"--set {key}"
        return f"grid.{key}" if key in grid_flag_names(block) else f"fixed.{key}" if key in block.fixed else key

    def _check_values(self, block: Block, flags: dict[str, Any]) -> None:
        fail = lambda key, problem: self.manifest.fail(self._origin(block, key), problem)  # noqa: E731
        if ROW in flags and flags[ROW] not in self.rows:
            raise fail(ROW, f"{flags[ROW]!r} is not a paper row; choose among {', '.join(self.rows)}.")
        if "model" in flags and not _known_model(str(flags["model"])):
            raise fail("model", f"{flags['model']!r} is neither a known model ({', '.join(accepted_model_names())}, "
                                f"{RANDOM_PREFIX}<architecture>) nor an existing checkpoint file.")
        if "dataset" in flags and flags["dataset"] not in DATASET_NAMES:
            raise fail("dataset", f"{flags['dataset']!r} is not a dataset; choose among {', '.join(DATASET_NAMES)}.")

    def _q_config(self, block: Block | None, value: Any, recon_iters: Any) -> tuple[str, Any]:
        """The file a ``q_config`` value names (a derived config's file under the sweep folder) and the loaded config."""
        name = self._derived.get(str(value), str(value))
        if name in self.manifest.configs:
            path, check = self.out / "configs" / f"{name}.yaml", self._scratch / f"{name}.yaml"
            if not check.exists():
                spec = self.manifest.configs[name]
                try:
                    write_derived_qconfig(check, resolve_resource(spec["root"]),
                                          {k: v for k, v in spec.items() if k != "root"})
                except (OSError, TypeError, ValueError) as exc:
                    raise self.manifest.fail(f"configs.{name}", f"cannot be written ({exc}).") from None
        else:
            path = check = resolve_resource(name)
        cache_key = (str(check), recon_iters)
        if cache_key not in self._qconfigs:
            try:
                self._qconfigs[cache_key] = load_qconfig(str(check), recon_iters)
            except D4CError as exc:
                where = f"configs.{name}" if name in self.manifest.configs or block is None \
                    else self._origin(block, "q_config")
                raise self.manifest.fail(where, exc.describe()) from None
        if name in self.manifest.configs:
            self._derived[str(path)] = name
        return str(path) if name in self.manifest.configs else name, self._qconfigs[cache_key]

    # -- cells ------------------------------------------------------------------------------------------
    def _argv(self, block: Block, flags: dict[str, Any]) -> list[str]:
        argv: list[str] = []
        if ROW in flags:
            argv += row_argv(str(flags[ROW]))
            set_by_row = {a.lstrip("-") for a in argv if a.startswith("--")}
            clash = sorted(set_by_row & {k for k, v in flags.items() if k != ROW and v not in (None, False)})
            if clash:
                raise self.manifest.fail(self._origin(block, clash[0]), f"is set by row {flags[ROW]} already "
                                                                        f"({' '.join(row_argv(str(flags[ROW])))}).")
        for name, value in flags.items():
            if name != ROW:
                argv += self.flags.argv(name, value)
        return argv

    def _config(self, block: Block, argv: list[str]) -> RunConfig:
        try:
            args = self.flags.parser.parse_args(argv)
        except Exception as exc:  # argparse.ArgumentError: a value of the wrong type or not among the choices
            name = getattr(exc, "argument_name", None) or ""
            key = name.lstrip("-").split("/")[0]
            raise self.manifest.fail(self._origin(block, key), str(getattr(exc, "message", exc))) from None
        try:
            return RunConfig.from_flags(vars(args))
        except D4CError as exc:
            key = exc.parameter or ""
            raise self.manifest.fail(self._origin(block, key) if key else block.name, exc.describe()) from None

    def _output(self, block: Block, config: RunConfig) -> Path:
        fields = {f for _, f, _, _ in string.Formatter().parse(block.output) if f is not None}
        extra = {"block": slug(block.name),
                 **{k: "" if v is None else slug(str(v)) for k, v in config.as_flags().items()}}
        unknown = sorted(f for f in fields if f not in OUTPUT_KEYS and f not in extra)
        if unknown:
            raise self.manifest.fail("output", f"uses unknown placeholder {{{unknown[0]}}}; use a flag name, "
                                               f"{{block}} or any of {', '.join('{' + k + '}' for k in OUTPUT_KEYS)}.")
        template = block.output
        for f in fields - set(OUTPUT_KEYS):
            template = template.replace("{" + f + "}", extra[f])
        return output_path(dataclasses.replace(config, output=str(self.out / template)))

    def _check_files(self, block: Block, config: RunConfig) -> None:
        key = ("custom_file", config.custom_file)
        if key not in self._checked_files and not config.fp_model:
            try:
                load_prompt_file(config.custom_file)
            except D4CError as exc:
                raise self.manifest.fail(self._origin(block, "custom_file"), exc.describe()) from None
            self._checked_files.add(key)

    def _cell_flags(self, block: Block) -> list[dict[str, Any]]:
        for key, values in block.grid.items():
            if all(isinstance(v, dict) for v in values):
                for i, value in enumerate(values):
                    self._check_names(value, f"grid.{key}[{i}]")
            elif any(isinstance(v, dict) for v in values):
                raise self.manifest.fail(f"grid.{key}", "mixes mappings of flags with plain values.")
            else:
                self._check_names([key], "grid")
        self._check_names(block.fixed, "fixed")
        for i, rule in enumerate(block.exclude):
            self._check_names(rule, f"exclude[{i}]")
        for i, rule in enumerate(block.collapse):
            self._check_names(rule.get("where", {}), f"collapse[{i}].where")
        cells = []
        for flags in expand_block(block, self.seeds):
            flags.update(self.overrides)
            if not all(matches(flags, {k: v}) for k, v in self.only.items()):
                continue
            if any(matches(flags, rule) for rule in block.exclude):
                continue
            cells.append(collapse_flags(flags, block.collapse, self.flags.names, self.manifest.path))
        return cells

    def plan(self) -> Plan:
        """Expand, check and group every cell (raises a one-sentence :class:`D4CError` on any problem)."""
        self._scratch = Path(tempfile.mkdtemp(prefix="d4c-sweep-configs-"))
        try:
            return self._plan()
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _plan(self) -> Plan:
        self._check_names(self.overrides, "--set")
        self._check_names(self.only, "--only")
        cells: dict[Path, Cell] = {}
        for block in self.manifest.blocks:
            for flags in self._cell_flags(block):
                self._check_values(block, flags)
                if "q_config" in flags:
                    flags = {**flags, "q_config": self._q_config(block, flags["q_config"], flags.get("recon_iters"))[0]}
                argv = self._argv(block, flags)
                config = self._config(block, argv)
                self._check_files(block, config)
                if "q_config" not in flags and not config.fp_model and not config.load_quant:
                    self._q_config(block, config.q_config, config.recon_iters)  # the default config must load too
                output = self._output(block, config)
                argv = [*argv, "--output", str(output)]
                config = dataclasses.replace(config, output=str(output))
                if output in cells:
                    other = cells[output]
                    if other.argv != argv:
                        raise self.manifest.fail("output", f"cells of {other.blocks[0]} and {block.name} both write "
                                                           f"{output} with different flags; add a placeholder that "
                                                           f"tells them apart (any flag name, e.g. {{gen_schedule}}).")
                    if block.name not in other.blocks:
                        other.blocks.append(block.name)
                    continue
                name = str(output.relative_to(self.out).with_suffix("")) if output.is_relative_to(self.out) \
                    else output.stem
                cells[output] = Cell(name, [block.name], flags, argv, output, config)
        if not cells:
            raise self.manifest.fail("grid", "produces no cells" + (" (after exclude and --only)."
                                                                    if self.only or any(b.exclude for b in
                                                                                        self.manifest.blocks) else "."))
        ordered = list(cells.values())
        generations = self._generations(ordered)
        configs = {name: (self.out / "configs" / f"{name}.yaml", spec) for name, spec in self.manifest.configs.items()}
        return Plan(self.manifest, self.out, ordered, generations, configs)

    # -- generations ------------------------------------------------------------------------------------
    def _signature(self, cell: Cell) -> dict[str, Any] | None:
        """What a cell's pseudo images depend on (None when it has none to generate, or is a generation itself)."""
        config = cell.config
        if config.gen_only or not (config.dfq and config.gen_img) or config.fp_model or config.load_quant:
            return None
        method = config.generation.method
        if method != BASELINE and not method_class(method).optimizes:
            return None
        num_images = self._q_config(None, config.q_config, config.recon_iters)[1].calibrate.visual
        settings = dataclasses.replace(config.pseudo_image_settings(num_images), gen_ckpt_every=0)
        prompts = resolve_resource(config.custom_file)
        return {"model": {f.name: getattr(config, f.name) for f in dataclasses.fields(RunConfig)
                          if f.metadata.get("group") == MODEL and f.name != "device"},
                "settings": settings.as_dict(), "prompts": hashlib.sha256(prompts.read_bytes()).hexdigest(),
                "gen_cache_dir": str(Path(config.gen_cache_dir).resolve())}

    def _generation_argv(self, cell: Cell, output: Path) -> list[str]:
        flags = {k: v for k, v in cell.flags.items()
                 if k in (ROW, "seed", "q_config") or self.flags.groups.get(k) in (MODEL, DFQ)}
        flags.pop("output", None)
        row = row_argv(str(flags.pop(ROW))) if ROW in flags else []
        return [*row, *[part for k, v in flags.items() for part in self.flags.argv(k, v)],
                "--gen_only", "--output", str(output)]

    def _generations(self, cells: list[Cell]) -> list[Generation]:
        by_signature: dict[str, Generation] = {}
        for cell in cells:
            signature = self._signature(cell)
            if signature is None:
                continue
            digest = hashlib.sha256(json.dumps(signature, sort_keys=True, default=str).encode()).hexdigest()
            if digest not in by_signature:
                settings = signature["settings"]
                name = (f"{slug(cell.config.model)}_{cell.config.row}_{settings['gen_schedule']}"
                        f"_n{settings['num_images']}_s{settings['seed']}_{digest[:8]}")
                output = self.out / "generations" / f"{name}.json"
                by_signature[digest] = Generation(name, self._generation_argv(cell, output), output)
            by_signature[digest].cells.append(cell.name)
            cell.generation = by_signature[digest].name
        return list(by_signature.values())


def result_status(path: Path, config: RunConfig) -> str:
    """``done`` (the result exists and was made with these flags), ``to run``, or ``stale: <first difference>``."""
    if not path.is_file():
        return "to run"
    try:
        recorded = json.loads(path.read_text()).get("args", {})
    except (OSError, ValueError):
        return "to run"  # unreadable: it is made again
    for name, value in config.as_flags().items():
        if name in ENVIRONMENT_FLAGS or name not in recorded:
            continue
        if recorded[name] != value and str(recorded[name]) != str(value):
            return f"stale: --{name} {recorded[name]} there, {value} here"
    return "done"
