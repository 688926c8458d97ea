"""The pass manager: a registry of passes, textual pipelines and the named -O levels.

A pipeline is text that prints back to itself: `prune(sparsity=0.9),kmeans(bits=5)`.
The manager verifies the IR after every pass and times it; a failure names the pass and the
ones that ran before it.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, ClassVar

from dlcc.errors import DlccError, PassError, PipelineError
from dlcc.ir import Graph

PRESETS = {"O0": ""}


class Pass:
    """Base of every pass: a name, a one-line summary, an Options dataclass and `run`."""

    name: ClassVar[str]
    summary: ClassVar[str]

    @dataclasses.dataclass(frozen=True)
    class Options:
        pass

    def run(self, graph: Graph, options: Any) -> dict[str, Any]:
        """Rewrite `graph` in place; return the statistics to log."""
        raise NotImplementedError


_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator adding a pass to the registry under its `name`."""
    _PASSES[cls.name] = cls
    return cls


def registered_passes() -> dict[str, type[Pass]]:
    """Every registered pass by name."""
    return dict(_PASSES)


@dataclasses.dataclass(frozen=True)
class Step:
    """One pass of a pipeline with its explicit options."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}({','.join(f'{k}={v}' for k, v in self.options)})"


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """An ordered list of steps; `str(parse(text)) == text` for canonical text."""

    steps: tuple[Step, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.steps)


_STEP = re.compile(r"\s*([A-Za-z_][\w-]*)\s*(?:\(([^()]*)\))?\s*(?:,|$)")


def parse_pipeline(text: str) -> Pipeline:
    """Parse `-O2`, `O2` or `name(opt=value,...),name,...`; unknown passes are errors."""
    text = text.strip()
    preset = text.lstrip("-")
    if preset in PRESETS:
        text = PRESETS[preset]
    steps, pos = [], 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m or m.end() == pos:
            raise PipelineError(f"pipeline {text!r}: cannot parse at column {pos + 1}")
        name, args = m.group(1), m.group(2)
        if name not in _PASSES:
            known = ", ".join(sorted(_PASSES)) or "none yet"
            raise PipelineError(f"pipeline: unknown pass {name!r}; known: {known}")
        options = []
        for item in filter(None, (a.strip() for a in (args or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise PipelineError(f"pipeline: option {item!r} of {name!r} needs key=value")
            options.append((key.strip(), value.strip()))
        steps.append(Step(name, tuple(options)))
        pos = m.end()
    return Pipeline(tuple(steps))


def run_pipeline(graph: Graph, pipeline: Pipeline) -> list[dict[str, Any]]:
    """Run every step on `graph`, verifying after each; returns the pass log."""
    log = []
    for i, step in enumerate(pipeline.steps):
        cls = _PASSES[step.name]
        start = time.perf_counter()
        try:
            stats = cls().run(graph, cls.Options(**dict(step.options)))
            graph.verify()
        except DlccError as e:
            before = ", ".join(s.name for s in pipeline.steps[:i]) or "none"
            raise PassError(f"pass {step.name!r} failed (after: {before}): {e}") from None
        log.append({"pass": str(step), "seconds": round(time.perf_counter() - start, 3), **stats})
    return log
