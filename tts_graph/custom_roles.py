"""Custom roles by name: those registered with ``register`` (``roles.register_role``) and those
installed under the ``tts_graph.roles`` entry point.

DESIGN: the file format must know which ``role:`` names a plugin provides (a custom role's node
takes ``params:``, an unknown name is an error at its line), while the role registry turns a
name into a ``Role``. Rather than ``spec`` calling the registry (which imports every role, and
every role imports ``spec``: a cycle), the names live here, below ``spec``: ``spec`` asks which
custom names exist at parse time, and ``roles.registry`` resolves a name to its class at compile
time. Reading an entry point's name does not load its module, so a plugin that fails to load
is reported when a graph uses it (by ``roles.registry``), and no sooner.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .roles.base import Role

ENTRY_POINT_GROUP = "tts_graph.roles"

#: roles registered in this process (``register_role``), by name
REGISTERED: dict[str, type[Role]] = {}


@cache
def installed() -> dict[str, EntryPoint]:
    """The ``tts_graph.roles`` entry points of the installed distributions, by name (read
    once; ``installed.cache_clear()`` reads them again)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def register(name: str, cls: type[Role]) -> None:
    REGISTERED[name] = cls


def names() -> list[str]:
    """Every custom role name, sorted."""
    return sorted({*installed(), *REGISTERED})
