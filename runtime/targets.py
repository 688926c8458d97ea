"""The registry of execution targets (`--target NAME`)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from dlcc.errors import ExecutionError

_TARGETS: dict[str, Callable[[], object]] = {}


def register_target(name: str):
    """Decorator registering a zero-argument factory of a target under `name`."""

    def wrap(factory):
        _TARGETS[name] = factory
        return factory

    return wrap


@register_target("interp")
def _interp():
    return _classes()[0]()


@register_target("systolic")
def _systolic():
    return _classes()[1]()


@functools.cache
def _classes() -> tuple[type, type]:
    """The target classes, imported on first use (they import the loader, which imports
    this module), then held: a run imports nothing."""
    from dlcc.runtime.interpreter import Interpreter
    from dlcc.runtime.systolic.engine import SystolicTarget

    return Interpreter, SystolicTarget


def target_names() -> list[str]:
    """Names of the registered targets."""
    return sorted(_TARGETS)


def get_target(name: str):
    """A fresh target; an ExecutionError lists the known ones on a miss."""
    if name not in _TARGETS:
        raise ExecutionError(f"unknown target {name!r}; known: {', '.join(target_names())}")
    return _TARGETS[name]()
