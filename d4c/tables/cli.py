"""``d4c-results build DIR... [--table main|ablation|gen_time|zoo] [--csv FILE] [--md FILE]``.

Collects every result JSON under the folders (a sweep folder, or any folder of d4c-quant results)
into one CSV (the columns of :mod:`d4c.tables.collect`) and renders the table in the paper's layout
(rows = methods, columns = model x dataset, one block per bit width, mean ± std over seeds, D4C's
gain over the baseline, missing cells as —). ``--md FILE``: where FILE has the table's markers
(``<!-- ptq-table:start -->`` ... for the zoo) only those blocks are replaced, else FILE is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from d4c.errors import D4CError
from d4c.io import atomic_path, replace_between
from d4c.tables.collect import collect, write_csv
from d4c.tables.layouts import LAYOUTS, Section, as_markdown, render_sections

PROG = "d4c-results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="CSV of every result and the Markdown table",
                           description=__doc__.split("\n\n", 1)[1])
    build.add_argument("dirs", nargs="+", help="sweep folders or folders of result JSON files")
    build.add_argument("--table", choices=sorted(LAYOUTS), default=None,
                       help="layout (default: the table named by the sweep folder's plan.json)")
    build.add_argument("--csv", default=None, help="CSV file (default: <first folder>/results.csv)")
    build.add_argument("--md", default=None, help="Markdown file to write, or whose marked blocks to replace")
    return parser


def _table_of(dirs: list[str]) -> str:
    names = set()
    for folder in dirs:
        for plan in Path(folder).rglob("plan.json"):
            try:
                names.add(json.loads(plan.read_text()).get("table"))
            except (OSError, ValueError):
                continue
    names.discard(None)
    if len(names) != 1 or next(iter(names)) not in LAYOUTS:
        raise D4CError(f"choose a layout with --table ({', '.join(sorted(LAYOUTS))}): the folders' plans name "
                       f"{', '.join(sorted(map(str, names))) or 'none'}.")
    return next(iter(names))


def write_markdown(path: Path, sections: list[Section]) -> list[str]:
    """Replace the marked blocks of an existing ``path`` (the README's tables), or write the whole file; the
    markers replaced. An existing file lacking one of the layout's markers is left alone (an error)."""
    text = path.read_text() if path.is_file() else None
    markers = [m for m, _ in sections if m]
    if text is None or not markers:
        text, markers = as_markdown(sections), []
    else:
        missing = [m for m in markers if f"<!-- {m}:start -->" not in text or f"<!-- {m}:end -->" not in text]
        if missing:
            raise D4CError(f"{path} has no <!-- {missing[0]}:start --> ... <!-- {missing[0]}:end --> markers; add "
                           f"them where the table goes, or name a new file to write the tables to.")
        for marker, block in sections:
            if marker:
                text = replace_between(text, f"<!-- {marker}:start -->", f"<!-- {marker}:end -->", block)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return markers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        missing = [d for d in args.dirs if not Path(d).exists()]
        if missing:
            raise D4CError(f"{missing[0]} does not exist.")
        rows = collect(args.dirs)
        if not rows:
            raise D4CError(f"no result files under {', '.join(args.dirs)}.")
        table = args.table or _table_of(args.dirs)
        csv_path = Path(args.csv) if args.csv else Path(args.dirs[0]) / "results.csv"
        write_csv(csv_path, rows)
        sections = render_sections(table, rows)
        print(as_markdown(sections), end="")
        print(f"\n{len(rows)} results -> {csv_path}", file=sys.stderr)
        if args.md:
            replaced = write_markdown(Path(args.md), sections)
            print(f"{args.md}: " + (f"replaced the {', '.join(replaced)} blocks" if replaced else "written"),
                  file=sys.stderr)
    except D4CError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # markers out of order
        print(f"{PROG}: error: {args.md}: {exc}.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
