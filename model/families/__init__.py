"""Families of invertible blocks, one module each, found by name through the registry.

``idensenet``: the paper's dense blocks (§3); ``resflow``: the Residual Flow baseline whose models
define the parameter budgets. See ``docs/extending.md`` for adding one.
"""

from .base import ACTIVATION_PARAMS, ArchConfig, Family, channel_multiplier
from .registry import (
    arch_defaults,
    arch_fields,
    budget_family,
    families,
    family_names,
    get_family,
    import_modules,
    plugin_modules,
    register,
    unregister,
)
from . import idensenet, resflow  # noqa: E402,F401  (each registers itself)

__all__ = [
    "ACTIVATION_PARAMS", "ArchConfig", "Family", "channel_multiplier", "arch_defaults", "arch_fields",
    "budget_family", "families", "family_names", "get_family", "import_modules", "plugin_modules",
    "register", "unregister",
]
