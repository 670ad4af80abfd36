"""Sweep manifests: a paper table as a YAML grid of ``d4c-quant`` flags, expanded into cells.

A manifest (``exp/sweeps/*.yaml``)::

    name: main                      # the sweep's name (default output folder results/sweeps/<name>)
    table: main                     # the d4c-results layout of its table
    description: one line
    seeds: [0]                      # every cell runs once per seed (--seeds overrides)
    output: "{model}/{dataset}/{q_config}_{method}_{recon}_s{seed}.json"   # under the sweep folder
    fixed: {recon: true}            # flags of every cell
    grid:                           # lists of values; the cells are their cartesian product
      model: [RN50, ViT-B/32]
      row: [fp, real, gaussian, baseline, d4c3]    # a paper row: its flags (d4c-quant's row table)
    exclude:                        # cells matching every key of an entry are dropped (a list: any of)
      - {row: fp, recon: true}
    collapse:                       # in matching cells these flags are unset (glob patterns), so
      - where: {row: fp}            # the grid's copies become one cell: FP does not multiply over configs
        flags: [q_config, recon]
    configs:                        # derived quantization configs (written under <sweep>/configs/)
      config48_img32: {root: exp/config48.yaml, calibrate: {visual: 32}}
    blocks:                         # optional: parts with their own grid/fixed/seeds/...; the keys
      - name: ptq                   # above are their defaults (fixed and grid merged, lists joined)
        grid: {...}

Any flag of ``d4c-quant`` (:func:`d4c.cli.build_parser`) may be gridded or fixed, plus ``row``.
Everything is checked before anything runs; a problem stops with one sentence naming the file
and the key.
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from d4c.errors import D4CError

ROW = "row"
TOP_KEYS = ("name", "table", "description", "seeds", "output", "fixed", "grid", "exclude", "collapse", "configs",
            "blocks")
BLOCK_KEYS = ("name", "description", "seeds", "output", "fixed", "grid", "exclude", "collapse")
DEFAULT_OUTPUT = "{block}/{model}/{dataset}/{q_config}_{method}_{recon}_s{seed}.json"


@dataclass
class Block:
    """One part of a manifest: its own grid, fixed flags, seeds, exclusions and output template."""

    name: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]
    seeds: list[int]
    output: str
    exclude: list[dict[str, Any]] = field(default_factory=list)
    collapse: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Manifest:
    """A parsed manifest: blocks of flag grids, derived configs, the table it renders into."""

    path: Path
    name: str
    table: str
    description: str
    blocks: list[Block]
    configs: dict[str, dict[str, Any]]

    def fail(self, key: str, problem: str) -> D4CError:
        return manifest_error(self.path, key, problem)


PREDICATES = ("is", "must", "uses", "produces", "mixes", "needs", "cannot", "matches", "has")


def manifest_error(path: str | Path, key: str, problem: str) -> D4CError:
    """``FILE: KEY is ...`` when ``problem`` is a predicate of the key, else ``FILE: KEY: problem``."""
    if not key:
        return D4CError(f"{path}: {problem}")
    joint = " " if problem.split(" ", 1)[0] in PREDICATES else ": "
    return D4CError(f"{path}: {key}{joint}{problem}")


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise manifest_error(path, key, f"must be a mapping of flag names to values, got {type(value).__name__}.")
    return dict(value)


def _rules(value: Any, path: Path, key: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise manifest_error(path, key, "must be a list of mappings.")
    return list(value)


def _seeds(value: Any, path: Path, key: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in value):
        raise manifest_error(path, key, f"must be a non-empty list of integers, got {value!r}.")
    return list(value)


def _grid(value: Any, path: Path, key: str) -> dict[str, list[Any]]:
    grid = _mapping(value, path, key)
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise manifest_error(path, f"{key}.{name}", f"must be a non-empty list of values, got {values!r}.")
    return grid


def _check_keys(doc: dict, allowed: tuple[str, ...], path: Path, where: str) -> None:
    for key in doc:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, 1)
            raise manifest_error(path, f"{where}{key}", "is not a manifest key" +
                                 (f" (did you mean {hint[0]}?)" if hint else f"; expected {', '.join(allowed)}."))


def load_manifest(path: str | Path) -> Manifest:
    """Read and structurally check a manifest (flag names and values are checked by :func:`expand`)."""
    path = Path(path)
    if not path.is_file():
        raise D4CError(f"{path} does not exist.", "manifest")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise manifest_error(path, "", f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
    if not isinstance(doc, dict):
        raise manifest_error(path, "", "must be a YAML mapping with a grid (see d4c/sweep/manifest.py).")
    _check_keys(doc, TOP_KEYS, path, "")
    name = str(doc.get("name") or path.stem)
    base = {"seeds": _seeds(doc.get("seeds", [0]), path, "seeds"), "output": str(doc.get("output", DEFAULT_OUTPUT)),
            "fixed": _mapping(doc.get("fixed"), path, "fixed"), "grid": _grid(doc.get("grid"), path, "grid"),
            "exclude": _rules(doc.get("exclude"), path, "exclude"),
            "collapse": _rules(doc.get("collapse"), path, "collapse")}
    raw_blocks = doc.get("blocks") or [{"name": name}]
    if not isinstance(raw_blocks, list):
        raise manifest_error(path, "blocks", "must be a list of blocks.")
    blocks = []
    for i, raw in enumerate(raw_blocks):
        where = f"blocks[{i}]"
        if not isinstance(raw, dict):
            raise manifest_error(path, where, "must be a mapping.")
        _check_keys(raw, BLOCK_KEYS, path, f"{where}.")
        blocks.append(Block(
            name=str(raw.get("name", f"block{i}")),
            grid={**base["grid"], **_grid(raw.get("grid"), path, f"{where}.grid")},
            fixed={**base["fixed"], **_mapping(raw.get("fixed"), path, f"{where}.fixed")},
            seeds=_seeds(raw["seeds"], path, f"{where}.seeds") if "seeds" in raw else base["seeds"],
            output=str(raw.get("output", base["output"])),
            exclude=base["exclude"] + _rules(raw.get("exclude"), path, f"{where}.exclude"),
            collapse=base["collapse"] + _rules(raw.get("collapse"), path, f"{where}.collapse")))
    configs = _mapping(doc.get("configs"), path, "configs")
    for cname, spec in configs.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("root"), str):
            raise manifest_error(path, f"configs.{cname}", "must be a mapping with root: <parent config> and the "
                                                           "sections it overrides.")
        if str(cname).endswith((".yaml", ".yml")):
            raise manifest_error(path, f"configs.{cname}", "a derived config's name must not end with .yaml.")
    return Manifest(path, name, str(doc.get("table", name)), str(doc.get("description", "")), blocks, configs)


def matches(flags: dict[str, Any], rule: dict[str, Any]) -> bool:
    """True when ``flags`` has every key of ``rule`` with its value (a list in the rule: any of its values)."""
    for key, wanted in rule.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if key not in flags or not any(same_value(flags[key], w) for w in options):
            return False
    return True


def same_value(a: Any, b: Any) -> bool:
    """Flag values compared as written (``4`` and ``"4"``, ``True`` and ``"true"`` are the same)."""
    return a == b or str(a).lower() == str(b).lower()


def grid_flag_names(block: Block) -> set[str]:
    """The flags a block's grid sets: its keys, or for a key whose values are mappings, their keys."""
    names: set[str] = set()
    for key, values in block.grid.items():
        if all(isinstance(v, dict) for v in values):
            names.update(k for v in values for k in v)
        else:
            names.add(key)
    return names


def expand_block(block: Block, seeds: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """The flag sets of a block's cells: fixed flags, one grid combination and a seed each, in grid order.

    A grid value that is a mapping sets several flags together (``{recon: true, recon_iters: 100}``); its key
    is only a label. A grid or fixed ``seed`` replaces ``seeds`` (unless ``seeds`` is given: ``--seeds``)."""
    names = list(block.grid)
    own_seed = "seed" in block.fixed or "seed" in grid_flag_names(block)
    for combination in itertools.product(*(block.grid[n] for n in names)):
        flags = dict(block.fixed)
        for name, value in zip(names, combination):
            flags.update(value) if isinstance(value, dict) else flags.__setitem__(name, value)
        for seed in seeds or ([None] if own_seed else block.seeds):
            yield flags if seed is None else {**flags, "seed": seed}


def collapse_flags(flags: dict[str, Any], rules: list[dict[str, Any]], known: list[str], path: Path) -> dict[str, Any]:
    """``flags`` without those that a matching ``collapse`` rule unsets."""
    out = dict(flags)
    for i, rule in enumerate(rules):
        where, patterns = rule.get("where", {}), rule.get("flags", [])
        if not isinstance(where, dict) or not isinstance(patterns, list):
            raise manifest_error(path, f"collapse[{i}]", "needs where: {flag: value} and flags: [patterns].")
        if matches(out, where):
            for pattern in patterns:
                if not any(fnmatch.fnmatchcase(k, pattern) for k in known):
                    raise manifest_error(path, f"collapse[{i}].flags", f"{pattern!r} matches no flag of d4c-quant.")
                for key in [k for k in out if fnmatch.fnmatchcase(k, pattern) and k != "seed"]:
                    del out[key]
    return out
