"""Checks of a graph's model entries that need no model call: run by ``validate`` (and by
``run`` and ``serve`` before they bind backends), so a graph that cannot run is reported with
its file:line before anything loads.

- ``local``: a built-in model name, or ``options.path`` naming a file that exists;
- ``vllm``: a Hugging Face repo id (``org/name``) or a local directory that exists;
- ``litellm``: a model string of ``provider/model`` shape (no spaces, no empty part);
- ``openai``: ``api_base`` an http(s) URL with a host, ``options.chat`` a boolean;
- ``sim``: a simulated model (or ``options.base``) that exists, options it knows;
- ``api_key_env`` naming an unset variable: a *warning* (the key may be set where the graph
  runs), which ``run`` and ``serve`` treat as an error since they call the model now; one
  holding a line break or another control character inside the key: an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .backends.keys import env_key, key_problem
from .errors import GraphError
from .spec import GraphDoc, ModelSpec

#: a Hugging Face repo id: ``name`` or ``namespace/name`` (letters, digits, ``-_.``)
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
#: litellm: ``model`` or ``provider/model[/...]``; parts are non-empty, without spaces
_LITELLM = re.compile(r"^[^\s/]+(/[^\s/]+)*$")
_PATH_START = (".", "~", "/")


@dataclass
class ModelProblems:
    errors: list[GraphError] = field(default_factory=list)
    warnings: list[GraphError] = field(default_factory=list)

    def lines(self, *, warnings_fatal: bool) -> list[str]:
        """Error lines; with ``warnings_fatal`` the warnings too (sorted by line)."""
        found = [*self.errors, *(self.warnings if warnings_fatal else [])]
        return [str(e) for e in sorted(found, key=lambda e: e.line or 0)]


def _path(value: str, base_dir: Path | None) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _local(spec: ModelSpec, base_dir: Path | None) -> tuple[str, str] | None:
    from .backends.local import KNOWN_MODELS

    if "path" in spec.options:
        p = _path(str(spec.options["path"]), base_dir)
        if not p.is_file():
            return "options.path", f"no model file at {spec.options['path']} (looked for {p})"
        return None
    if spec.model not in KNOWN_MODELS:
        return "model", (f"unknown local model {spec.model!r}; built in: "
                         f"{', '.join(KNOWN_MODELS)} (or give options: {{path: file.gguf}})")
    return None


def _vllm(spec: ModelSpec, base_dir: Path | None) -> tuple[str, str] | None:
    m = spec.model
    if m.startswith(_PATH_START):
        if not _path(m, base_dir).is_dir():
            return "model", f"no local model directory {m!r}"
        return None
    if not _HF_ID.match(m):
        hint = (" (a litellm string? use backend: litellm)" if m.count("/") > 1
                else "")
        return "model", (f"{m!r} is not a Hugging Face repo id (org/name) or a local "
                         f"directory (./dir){hint}")
    return None


def _litellm(spec: ModelSpec, base_dir: Path | None) -> tuple[str, str] | None:
    if not _LITELLM.match(spec.model):
        return "model", (f"{spec.model!r} is not a litellm model string: provider/model, "
                         "without spaces or empty parts (e.g. openai/gpt-4o-mini)")
    return None


def _openai(spec: ModelSpec, base_dir: Path | None) -> tuple[str, str] | None:
    from .backends.openai_backend import config_problem

    return config_problem(spec)


def _sim(spec: ModelSpec, base_dir: Path | None) -> tuple[str, str] | None:
    from .errors import BackendError
    from .sim.profiles import profile_from_options

    try:
        profile_from_options(spec.model, spec.options)
    except BackendError as exc:
        message = str(exc).removeprefix("sim: ")
        if message.startswith("unknown options"):
            return "options", message
        return ("options.base" if "base" in spec.options else "model"), message
    except (TypeError, ValueError) as exc:  # an option of the wrong type ("price: cheap")
        return "options", f"an option of the wrong type: {exc}"
    return None


_CHECKS = {"local": _local, "vllm": _vllm, "litellm": _litellm, "openai": _openai,
           "sim": _sim}


def check_models(doc: GraphDoc) -> ModelProblems:
    """Every model entry of ``doc`` checked as far as it can be without loading it."""
    out = ModelProblems()
    for name, spec in doc.spec.models.items():
        check = _CHECKS.get(spec.backend)
        found = check(spec, doc.base_dir) if check is not None else None
        if found is not None:
            where, message = found
            out.errors.append(doc.error(("models", name, *where.split(".")), message))
        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            out.warnings.append(doc.error(
                ("models", name, "api_key_env"),
                f"environment variable {spec.api_key_env} is not set"))
        elif spec.api_key_env:
            problem = key_problem(spec.api_key_env, env_key(spec.api_key_env))
            if problem is not None:  # set, but no call could carry it
                out.errors.append(doc.error(("models", name, "api_key_env"), problem))
    return out
