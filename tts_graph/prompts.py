"""Prompt templates: ``{name}`` placeholders, ``{{``/``}}`` for literal braces.

Rendering is one pass of plain substitution: no attribute access, no expressions, and the
substituted values (user text, model output) are never rendered again.
"""

from __future__ import annotations

import functools
import re

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")


class TemplateError(ValueError):
    pass


def placeholders(template: str) -> list[str]:
    """Names used by ``template``; raises ``TemplateError`` on a stray brace."""
    names: list[str] = []
    for m in _TOKEN.finditer(template):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise TemplateError(
                f"stray '{tok}' at column {m.start() + 1} (write '{tok * 2}' for a literal brace)"
            )
        names.append(m.group(1))
    return names


def check_template(template: str, allowed: set[str]) -> None:
    for name in placeholders(template):
        if name not in allowed:
            raise TemplateError(
                f"unknown placeholder {{{name}}}; allowed: "
                + ", ".join("{" + a + "}" for a in sorted(allowed))
            )


@functools.lru_cache(maxsize=4096)
def _pieces(template: str) -> tuple[tuple[int, str], ...]:
    """``template`` split once into literal text (0, text), placeholders (1, name) and stray
    braces (2, brace), in order: a template is rendered once per call, parsed once."""
    out: list[tuple[int, str]] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        literal = template[pos:m.start()]
        pos = m.end()
        tok = m.group(0)
        if tok in ("{{", "}}"):
            out.append((0, literal + tok[0]))
        else:
            if literal:
                out.append((0, literal))
            out.append((1, m.group(1)) if m.group(1) is not None else (2, tok))
    if pos < len(template):
        out.append((0, template[pos:]))
    return tuple(out)


def render(template: str, values: dict[str, str]) -> str:
    parts: list[str] = []
    for kind, text in _pieces(template):
        if kind == 0:
            parts.append(text)
        elif kind == 1:
            if text not in values:
                raise TemplateError(f"no value for {{{text}}}")
            parts.append(values[text])
        else:
            raise TemplateError(f"stray '{text}'")
    return "".join(parts)
