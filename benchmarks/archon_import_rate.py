"""Archon import rate: how many Archon configs import and validate, and why the rest do not.

Each ``*.json`` under DIR (recursively) goes through what a user runs:
``tts-graph import archon`` (``load_archon`` + ``to_yaml``, which compiles the graph), then
``tts-graph validate`` on the produced file (load, compile, model checks; an unset API key is
a warning there, as it is here). Each file ends in one of three rows:

- imported + validated
- refused: a ``GraphError`` (one line, exit 2 in the CLI), grouped by its message with the
  file-specific parts (file, line, path, quoted names, numbers) taken out
- crashed: any other exception (the goal is 0)

Archon's own configs are not part of this repository (fetch them yourself into DIR); the quick
mode writes a few configs of its own in Archon's format instead.

    .venv/bin/python benchmarks/archon_import_rate.py DIR [--show-refused]
    .venv/bin/python benchmarks/archon_import_rate.py --quick
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

from _common import print_header, table

from tts_graph.archon import load_archon, to_yaml
from tts_graph.backends.registry import backend_names
from tts_graph.compile import compile_graph
from tts_graph.errors import GraphError, GraphErrors
from tts_graph.model_checks import check_models
from tts_graph.spec import load_graph


def _component(ctype: str, model: str, **extra: object) -> dict[str, object]:
    return {"type": ctype, "model": model, "model_type": "OpenAI_API", "temperature": 0.5,
            "max_tokens": 512, **extra}


def write_quick_configs(folder: Path) -> None:
    """A few configs in Archon's format (written here, not copied): one per outcome."""
    configs: dict[str, object] = {
        # generators, a critic, a ranker reading the critiques, a fuser
        "sample_rank_fuse.json": {"name": "quick-rank-fuse", "layers": [
            [_component("generator", "gpt-4o-mini", samples=3),
             _component("generator", "gpt-4o", samples=2)],
            [_component("critic", "gpt-4o")],
            [_component("ranker", "gpt-4o", top_k=2, use_critiques=True,
                        ranker_batch_size=8)],
            [_component("fuser", "gpt-4o", length_control=True)]]},
        # the older {"branches": 1, "models": [...]} layer form with unit tests
        "older_form_unit_tests.json": {"name": "quick-unit-tests", "layers": [
            {"branches": 1, "models": [_component("generator", "gpt-4o-mini", samples=4)]},
            {"branches": 1, "models": [_component("unit_test_generator", "gpt-4o",
                                                  unit_test_cap=3)]},
            {"branches": 1, "models": [_component("unit_test_evaluator", "gpt-4o",
                                                  first_pass=True)]}]},
        # a real gap: the PairRM reward model
        "pairrm.json": {"name": "quick-pairrm", "layers": [
            [_component("generator", "gpt-4o-mini", samples=4)],
            [{"type": "ranker", "model": "llm-blender/PairRM", "model_type": "", "top_k": 1}]]},
    }
    for name, data in configs.items():
        (folder / name).write_text(json.dumps(data, indent=4), encoding="utf-8")
    # malformed JSON: refused with file:line, never a crash
    (folder / "broken.json").write_text('{"name": "x", "layers": [[{"type": "generator"',
                                        encoding="utf-8")


_QUOTED = re.compile(r"'[^']*'")
_NUMBER = re.compile(r"\b\d+\b")


def reason_of(exc: GraphError) -> str:
    """The message without what differs from file to file, so that alike refusals group."""
    first = exc.errors[0] if isinstance(exc, GraphErrors) else exc
    return _NUMBER.sub("N", _QUOTED.sub("'…'", first.message))


def check_one(path: Path, work: Path) -> tuple[str, str]:
    """('ok' | 'refused' | 'crashed', detail) for one config."""
    try:
        notes: dict[str, list[str]] = {}
        text = to_yaml(load_archon(path, notes=notes), source=path.name, notes=notes)
        produced = work / (path.stem + ".yaml")
        produced.write_text(text, encoding="utf-8")
        graph = compile_graph(load_graph(produced), backends=backend_names())
        checked = check_models(graph.doc)
        if checked.errors:
            return "refused", "validate: " + checked.errors[0].split(": ")[-1]
        return "ok", ""
    except GraphError as exc:
        return "refused", reason_of(exc)
    except Exception:  # a crash is what this row counts
        return "crashed", traceback.format_exc(limit=3).strip().splitlines()[-1]


def measure(folder: Path, show_refused: bool) -> int:
    files = sorted(p for p in folder.rglob("*.json") if p.is_file())
    if not files:
        print(f"no *.json under {folder}", file=sys.stderr)
        return 2
    outcomes: dict[Path, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in files:
            outcomes[p] = check_one(p, Path(tmp))
    kinds = Counter(kind for kind, _ in outcomes.values())
    n = len(files)
    rows = [[label, kinds[kind], f"{100 * kinds[kind] / n:.1f}%"] for kind, label in (
        ("ok", "imported + validated"), ("refused", "refused (one line, exit 2)"),
        ("crashed", "crashed"))]
    print(f"{n} configs under {folder.name}/\n")
    print(table(["outcome", "configs", "share"], rows))
    reasons = Counter(detail for kind, detail in outcomes.values() if kind == "refused")
    if reasons:
        print("\nrefusals by reason:\n")
        print(table(["configs", "reason"], [[c, r] for r, c in reasons.most_common()]))
    crashes = [(p, d) for p, (kind, d) in outcomes.items() if kind == "crashed"]
    for p, detail in crashes:
        print(f"CRASH {p.relative_to(folder)}: {detail}")
    if show_refused:
        print()
        for p, (kind, detail) in outcomes.items():
            if kind == "refused":
                print(f"refused {p.relative_to(folder)}: {detail}")
    return 1 if crashes else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", type=Path, help="folder of Archon config JSON files")
    ap.add_argument("--quick", action="store_true",
                    help="run on a few configs this script writes in Archon's format")
    ap.add_argument("--show-refused", action="store_true", help="list each refused file")
    args = ap.parse_args()
    print_header("Archon import rate")
    if args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "quick"
            folder.mkdir()
            write_quick_configs(folder)
            return measure(folder, args.show_refused)
    if args.dir is None or not args.dir.is_dir():
        ap.error("give a folder of Archon configs, or --quick")
    return measure(args.dir, args.show_refused)


if __name__ == "__main__":
    raise SystemExit(main())
