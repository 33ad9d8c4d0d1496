"""``tts-graph import``: other frameworks' configs turned into graph files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import GraphErrors, TTSGraphError
from .common import _fail, err
from .files import check_output_file, write_text_file


def import_archon(
    config: Annotated[Path, typer.Argument(help="Archon config (JSON)")],
    output: Annotated[Path | None, typer.Option("--out", "-o",
                                                help="write the graph here (default: stdout)")
                      ] = None,
    name: Annotated[str | None, typer.Option(help="graph name (default: the config's)")
                    ] = None,
) -> None:
    """Convert an Archon config (layers of generators, fusers, critics, rankers, verifiers,
    unit-test generators and evaluators) into a graph file with the same meaning."""
    from ..archon import load_archon, to_yaml

    if output is not None:
        check_output_file(output, "--out", (config,))
    notes: dict[str, list[str]] = {}
    try:
        text = to_yaml(load_archon(config, name=name, notes=notes), source=str(config),
                       notes=notes)
    except GraphErrors as exc:
        raise _fail(exc.lines()) from None
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_file(output, text, option="--out")
        err.print(f"wrote {output}", markup=False, highlight=False)
