"""Which role class serves each ``role:`` name: the built-ins, plus the custom roles that
``tts_graph.custom_roles`` names (registered with ``register_role`` or under the
``tts_graph.roles`` entry point), loaded here when a graph is compiled."""

from __future__ import annotations

from functools import cache

from .. import custom_roles
from ..errors import TTSGraphError
from .base import Role


@cache
def builtin_roles() -> dict[str, type[Role]]:
    from .critic import Critic
    from .debate import Debate
    from .first_finish import FirstFinish
    from .fuser import Fuser
    from .judge import Judge
    from .planner import Planner
    from .ranker import Ranker
    from .refiner import Refiner
    from .solver import Solver
    from .unit_test_evaluator import UnitTestEvaluator
    from .unit_test_generator import UnitTestGenerator
    from .verifier import Verifier
    from .vote import Vote

    classes: list[type[Role]] = [Solver, Planner, Critic, Refiner, Judge, Verifier, Ranker,
                                 Fuser, Vote, Debate, FirstFinish, UnitTestGenerator,
                                 UnitTestEvaluator]
    return {cls.name: cls for cls in classes}


def _load_plugin(name: str) -> type[Role] | None:
    ep = custom_roles.installed().get(name)
    if ep is None:
        return None
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plugin must not break every graph
        raise TTSGraphError(f"role plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
                            ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Role)):
        raise TTSGraphError(f"role plugin {ep.name!r} ({ep.value}) is not a Role subclass")
    return cls


def register_role(name: str, cls: type[Role]) -> None:
    """Register a custom role under ``name`` (same effect as the entry point)."""
    if name in builtin_roles():
        raise TTSGraphError(f"role {name!r} is built in and cannot be replaced")
    custom_roles.register(name, cls)


def custom_role_names() -> list[str]:
    return custom_roles.names()


def all_role_names() -> list[str]:
    return [*builtin_roles(), *custom_role_names()]


def get_role(name: str) -> Role:
    cls = (builtin_roles().get(name) or custom_roles.REGISTERED.get(name)
           or _load_plugin(name))
    if cls is None:
        raise KeyError(name)
    return cls()
