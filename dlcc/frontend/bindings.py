"""Per-binding columns: how converters tell static dimensions from symbolic ones.

Every value's shape is known at the reference binding and at each probe (`dlcc.ir`), and a
constant folded from symbolic dimensions is known at each too (`Builder.at_probes`). Read
per axis (per entry of a constant), these give a *column*: its size at every binding,
reference first. A column with one size is static; one that varies is a symbolic dimension.
At run time an op can take such a dimension from a value whose shape has an equal column:
the value *holds* it (a Reshape's `-2 - axis`, an Expand's `shape_from`, a Slice's
`ends_from`, a Range's `axis`).
"""

from __future__ import annotations

import numpy as np

from dlcc.frontend.lowering import Builder
from dlcc.ir import Graph, Value

Column = tuple[int, ...]


def bindings(graph: Graph) -> list[int | None]:
    """The bindings in column order: None (the reference), then each probe."""
    return [None, *range(len(graph.symbols))]


def columns(v: Value, probes: list[int | None]) -> list[Column]:
    """Per axis of `v`, its size at each of `probes`."""
    return list(zip(*(v.shape_at(p) for p in probes)))


def constant_columns(data: np.ndarray, moved: list[np.ndarray]) -> list[Column]:
    """Per entry of a constant (its `data`, then its data at each probe), the entry's value
    at each binding."""
    flat = [np.asarray(d).reshape(-1).astype(np.int64) for d in (data, *moved)]
    return [tuple(int(d[k]) for d in flat) for k in range(flat[0].size)]


def is_static(column: Column) -> bool:
    """Whether the column has the same size at every binding."""
    return len(set(column)) == 1


def held(
    b: Builder, x: Value, wanted: list[Column | None], probes: list[int | None]
) -> tuple[Value | None, tuple[int, ...]]:
    """A value computed so far that holds every wanted column (x first, then the latest
    value, then the graph's inputs) and per entry of `wanted` its axis there (-1 for None).
    No value (None) when nothing is wanted."""
    needed = [c for c in wanted if c is not None]
    if not needed:
        return None, (-1,) * len(wanted)
    values = [x, *(v for n in reversed(b.graph.nodes) for v in n.outputs), *b.graph.inputs]
    for v in values:
        own = columns(v, probes)
        if all(c in own for c in needed):
            return v, tuple(-1 if c is None else own.index(c) for c in wanted)
    raise b.fail(
        f"reshapes {x.dims()} into several symbolic dimensions that no computed value holds; "
        "pin them with --shape NAME=DIMS"
    )
