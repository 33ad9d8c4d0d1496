"""Roles: one module per role. See ``base.Role`` for the interface."""

from .base import Call, Role, StepContext, StepPlan
from .registry import get_role, register_role

__all__ = ["Call", "Role", "StepContext", "StepPlan", "get_role", "register_role"]
