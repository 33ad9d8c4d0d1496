"""Prompt templates: ``{name}`` placeholders, ``{{``/``}}`` for literal braces.

Rendering is one pass of plain substitution: no attribute access, no expressions, and the
substituted values (user text, model output) are never rendered again.
"""

from __future__ import annotations

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


def render(template: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        name = m.group(1)
        if name is None:
            raise TemplateError(f"stray '{tok}'")
        if name not in values:
            raise TemplateError(f"no value for {{{name}}}")
        return values[name]

    return _TOKEN.sub(sub, template)
