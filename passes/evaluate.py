"""The one IR evaluator: runs a graph's nodes with the runtime's kernels.

Calibration, recovery, sensitivity, verify and backprop all see the inference semantics
every target runs, through `run_nodes`; each value is freed after its last use among the
nodes run, so memory follows the live activations.

    for node, args, outs in run_nodes(graph, feeds, params, nodes): ...
    for value, array in evaluate(graph, feeds): ...     # every non-constant value
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from dlcc.ir import Graph, Node, Value
from dlcc.runtime.kernels import get_kernel

Params = dict[tuple[str, int], np.ndarray]


def run_nodes(
    graph: Graph,
    feeds: dict[str, np.ndarray],
    params: Params | None = None,
    nodes: Sequence[Node] | None = None,
) -> Iterator[tuple[Node, list, tuple]]:
    """(node, input arrays, output arrays) for `nodes` (default: all) in order.

    `feeds` holds by name every non-constant value `nodes` read that none of them produces:
    the graph's inputs, or for a run that resumes mid-program, the live values there.
    `params` replaces the constant at input i of node n by params[(n.name, i)].
    """
    nodes = graph.nodes if nodes is None else nodes
    params = params or {}
    last = {id(v): i for i, n in enumerate(nodes) for v in n.inputs if v is not None}
    made = {id(v) for n in nodes for v in n.outputs}
    read = [v for n in nodes for v in n.inputs if v is not None and not v.is_constant]
    env: dict[int, np.ndarray] = {id(v): feeds[v.name] for v in read if id(v) not in made}
    for i, node in enumerate(nodes):
        args = [None if v is None else v.data if v.is_constant else env[id(v)] for v in node.inputs]
        args = [params.get((node.name, k), a) for k, a in enumerate(args)]
        outs = get_kernel(node.op)(node.attrs, *args)
        env.update(zip(map(id, node.outputs), outs))
        yield node, args, outs
        for v in node.inputs:
            if v is not None and last.get(id(v)) == i and v not in graph.outputs:
                env.pop(id(v), None)


def evaluate(graph: Graph, feeds: dict[str, np.ndarray]) -> Iterator[tuple[Value, np.ndarray]]:
    """Every non-constant value of `graph` with its array for `feeds`, in program order."""
    for value in graph.inputs:
        yield value, feeds[value.name]
    for node, _, outs in run_nodes(graph, feeds):
        yield from zip(node.outputs, outs)
