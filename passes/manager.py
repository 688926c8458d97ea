"""The pass manager: a registry of passes, textual pipelines and the named -O levels.

A pipeline is text that prints back to itself: `prune(sparsity=0.9),kmeans(bits=5)`. Options
are typed fields of each pass's `Options` dataclass (see `option()`); `layers=NAME:VALUE;...`
overrides a pass's main option per layer. The manager resolves every option (so a bundle
records exactly how it was made), verifies the IR after every pass and times it; a failure
names the pass and the ones that ran before it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import time
import types
import typing
from typing import Any, ClassVar

from dlcc.errors import DlccError, PassError, PipelineError
from dlcc.ir import Graph, Node, Value
from dlcc.runtime.kernels import get_kernel

PRESETS = {
    "O0": "",
    "O1": "quantize",
    # Han et al.'s rates: the first convolution (it sees the raw input) keeps ~2/3 of its weights,
    # later convolutions ~15%, fully connected layers ~8%; milder on the output layer (half
    # kept, 8-bit codebook), whose errors nothing downstream averages out: on LeNet-5 that
    # lifts top-1 agreement from 57% to 94% for 5% of the ratio. With data, the CLI's -O2 and
    # -O3 search per-layer rates instead (dlcc.budget.search). Recurrent weights keep 70%: each
    # step feeds the next, so their errors compound over the sequence (an LSTM MNIST classifier
    # at the dense layers' 92%: 14.5% agreement; at 30%: 8.1x, 99.4%).
    "O2": "prune(sparsity=0.92,layers=Conv#0:0.35;#-1:0.5;Conv:0.85;LSTM:0.3;GRU:0.3),"
    "quantize,huffman",
    "O3": "prune(sparsity=0.92,layers=Conv#0:0.35;#-1:0.5;Conv:0.85;LSTM:0.3;GRU:0.3),"
    "kmeans(layers=#-1:8),quantize,huffman",
}


def option(
    default: Any,
    help: str,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
) -> Any:
    """A pass option: default, one-line help, and an inclusive range or a set of choices."""
    meta = {"help": help, "low": low, "high": high, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class LayerOverrides:
    """Per-layer values of a pass's main option: `fc1:0.95;Conv:0.5;conv*:0.6`.

    A key selects a weight layer (`weight_layers`) by node name, the name of one of its
    weights, op type, a component of the node name (`fc1` selects `/fc1/Gemm`), a glob, or a
    position: `#0` is the first weight layer, `#-1` the last, `Conv#0` the first convolution.
    The first matching key wins; it sets every weight of the layer (an LSTM's W and R).
    """

    items: tuple[tuple[str, str], ...] = ()

    def lookup(self, node: Node, layers: list[Node] = ()) -> str | None:
        """The override for `node`, one of the graph's weight `layers`, or None."""
        names = {node.name, node.op, *(w.value.name for w in node_weights(node))}
        names |= set(re.split(r"[/.:]", node.name)) - {""}
        for prefix, group in (("", layers), (node.op, [n for n in layers if n.op == node.op])):
            if node in group:
                i = group.index(node)
                names |= {f"{prefix}#{i}", f"{prefix}#{i - len(group)}"}
        for key, value in self.items:
            if key in names or any(fnmatch.fnmatchcase(n, key) for n in names):
                return value
        return None

    def __str__(self) -> str:
        return ";".join(f"{k}:{v}" for k, v in self.items)


@dataclasses.dataclass(frozen=True)
class PassOptions:
    """Options every pass has; a pass's Options dataclass derives from it."""

    layers: LayerOverrides = option(LayerOverrides(), "per-layer values of the main option")


class Pass:
    """Base of every pass: a name, a one-line summary, an Options dataclass and `run`.

    `main` names the option that `layers=` overrides. A pass keeps no state between runs.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    main: ClassVar[str | None] = None
    Options: ClassVar[type] = PassOptions

    def run(self, graph: Graph, options: Any, ctx: PassContext) -> dict[str, Any]:
        """Rewrite `graph` in place; return the statistics to log (a `layers` list per layer)."""
        raise NotImplementedError

    @classmethod
    def for_layer(cls, options: Any, node: Node, layers: list[Node] = ()) -> Any:
        """The main option's value for `node`, honouring `layers=` overrides."""
        value = options.layers.lookup(node, layers)
        if value is None:
            return getattr(options, cls.main)
        field = next(f for f in dataclasses.fields(options) if f.name == cls.main)
        return _convert(cls.name, field, value, type(options))


@dataclasses.dataclass
class PassContext:
    """What passes may use besides the graph: data, the original weights, progress."""

    calibration: dict | None = None  # input name -> samples (no labels)
    train: dict | None = None  # input name -> samples, and "labels": int class ids
    evaluation: dict | None = None  # held data to score against (optional "labels")
    sensitivity: dict | None = None  # a sensitivity table already measured (budget search)
    progress: Any = None  # callable(description, done, total) or None
    timings: dict[str, float] | None = None  # filled with seconds per pass when given
    notes: list[str] = dataclasses.field(default_factory=list)
    # Each matrix layer's weight before the pipeline ran, by node name (set by run_pipeline).
    original_weights: dict[str, Any] = dataclasses.field(default_factory=dict)


_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator adding a pass to the registry under its `name`."""
    if cls.name in _PASSES:
        raise ValueError(f"pass {cls.name!r} registered twice")
    _PASSES[cls.name] = cls
    return cls


def registered_passes() -> dict[str, type[Pass]]:
    """Every registered pass by name, in registration order."""
    from dlcc.passes import load_all

    load_all()
    return dict(_PASSES)


@dataclasses.dataclass(frozen=True)
class Step:
    """One pass of a pipeline with the options given for it (as text)."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}({','.join(f'{k}={v}' for k, v in self.options)})"

    def typed(self) -> Any:
        """The pass's Options instance for this step; a PipelineError on a bad option."""
        cls = registered_passes()[self.name]
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        values = {}
        for key, text in self.options:
            if key not in fields:
                raise PipelineError(
                    f"pass {self.name!r} has no option {key!r}; options: {', '.join(fields)}"
                )
            values[key] = _convert(self.name, fields[key], text, cls.Options)
        return cls.Options(**values)

    def resolved(self) -> Step:
        """The same step with every option spelled out (defaults included)."""
        opts = self.typed()
        return Step(
            self.name, tuple((f.name, _format(getattr(opts, f.name))) for f in option_fields(opts))
        )


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """An ordered list of steps; `parse_pipeline(str(p)) == p`."""

    steps: tuple[Step, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.steps)

    def resolved(self) -> Pipeline:
        """Every step with all its options spelled out."""
        return Pipeline(tuple(s.resolved() for s in self.steps))


_STEP = re.compile(r"\s*([A-Za-z_][\w-]*)\s*(?:\(([^()]*)\))?\s*(?:,|$)")


def parse_pipeline(text: str) -> Pipeline:
    """Parse `-O2`, `O2` or `name(opt=value,...),name,...`; checks names and options."""
    text = text.strip()
    if text.lstrip("-") in PRESETS:
        text = PRESETS[text.lstrip("-")]
    passes = registered_passes()
    steps, pos = [], 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m or m.end() == pos:
            raise PipelineError(f"pipeline {text!r}: cannot parse at column {pos + 1}")
        name, args = m.group(1), m.group(2)
        if name not in passes:
            raise PipelineError(f"unknown pass {name!r}; known: {', '.join(passes)}")
        options = []
        for item in filter(None, (a.strip() for a in (args or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise PipelineError(f"pass {name!r}: option {item!r} needs the form key=value")
            options.append((key.strip(), value.strip()))
        step = Step(name, tuple(options))
        step.typed()  # validate now, not halfway through a compile
        steps.append(step)
        pos = m.end()
    return Pipeline(tuple(steps))


def run_pipeline(graph: Graph, pipeline: Pipeline, ctx: PassContext) -> list[dict[str, Any]]:
    """Run every step on `graph`, verifying after each; returns the pass log."""
    log = []
    passes = registered_passes()
    # Only the passes that fit to calibration data read the originals: without data, holding
    # them would keep a second copy of every weight the passes replace.
    ctx.original_weights = (
        {n.name: n.inputs[1].data for n in matrix_layers(graph)}
        if ctx.calibration is not None
        else {}
    )
    for i, step in enumerate(pipeline.steps):
        start = time.perf_counter()
        try:
            stats = passes[step.name]().run(graph, step.typed(), ctx)
            graph.verify()
        except DlccError as e:
            before = ", ".join(s.name for s in pipeline.steps[:i]) or "none"
            raise PassError(
                f"pass {step.name!r} failed (passes before it: {before}): {e}"
            ) from None
        if ctx.timings is not None:
            ctx.timings[str(step)] = time.perf_counter() - start
        # No timings in the log: it is stored in the bundle, which must be deterministic.
        log.append({"pass": str(step.resolved()), **_columns(stats)})
    return log


def _columns(stats: dict[str, Any]) -> dict[str, Any]:
    """Per-layer rows as columns (one list per field), floats to 5 significant digits."""
    rows = stats.get("layers")
    if not rows:  # no per-layer rows: no columns (META's schema wants a dict of lists)
        return {k: v for k, v in stats.items() if k != "layers"}

    def tidy(v):
        return float(f"{v:.5g}") if isinstance(v, float) else v

    columns = {key: [tidy(row.get(key)) for row in rows] for key in rows[0]}
    return {**stats, "layers": columns}


def layer_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-layer rows of a pass-log entry (the inverse of its columnar storage)."""
    columns = entry.get("layers") or {}
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def option_fields(options: Any) -> list[dataclasses.Field]:
    """A pass's option fields, its own first and the shared `layers` last."""
    fields = dataclasses.fields(options)
    return [f for f in fields if f.name != "layers"] + [f for f in fields if f.name == "layers"]


def pass_table() -> list[dict[str, Any]]:
    """Every pass with its options (name, default, help, range), for `dlcc passes`."""
    table = []
    for name, cls in registered_passes().items():
        options = []
        for f in option_fields(cls.Options):
            low, high, choices = (f.metadata.get(k) for k in ("low", "high", "choices"))
            bounds = f" [{low}..{high}]" if low is not None or high is not None else ""
            bounds = f" ({' | '.join(choices)})" if choices else bounds
            options.append(
                {
                    "name": f.name,
                    "default": _format(f.default) or "''",
                    "help": f.metadata.get("help", ""),
                    "range": bounds,
                }
            )
        table.append({"name": name, "summary": cls.summary, "options": options})
    return table


@dataclasses.dataclass(frozen=True)
class Weight:
    """A compressible weight: input `index` of `node`, as its op record declares it."""

    node: Node
    index: int
    channel_axis: int  # of its output channels: per-channel int8 scales run along it
    label: str  # its per-layer rows' name: the node's, plus the role when it has several

    @property
    def value(self) -> Value:
        return self.node.inputs[self.index]


def node_weights(node: Node) -> list[Weight]:
    """The weights of `node`: the inputs its op record declares (`Kernel.weights`) that hold
    constant float data (an LSTM's W and R, a Gather's table; not runtime ids)."""
    declared = [
        d
        for d in get_kernel(node.op).weights
        if d.index < len(node.inputs)
        and node.inputs[d.index] is not None
        and node.inputs[d.index].is_constant
        and node.inputs[d.index].data.dtype.kind == "f"
    ]
    return [
        Weight(
            node,
            d.index,
            d.channel_axis % node.inputs[d.index].data.ndim,
            node.name if len(declared) == 1 else f"{node.name}.{d.role}",
        )
        for d in declared
    ]


def weights(graph: Graph) -> list[Weight]:
    """Every compressible weight, in graph order: what prune, kmeans, quantize and huffman
    rewrite."""
    return [w for node in graph.nodes for w in node_weights(node)]


def weight_layers(graph: Graph) -> list[Node]:
    """The nodes with a compressible weight: the layers `layers=` overrides select."""
    return [node for node in graph.nodes if node_weights(node)]


def matrix_layers(graph: Graph) -> list[Node]:
    """The weight layers the systolic array runs (Dense, Conv: the record's int8 "matrix"),
    their weight input 1: what the passes that model a matrix product rewrite."""
    return [n for n in weight_layers(graph) if get_kernel(n.op).int8 == "matrix"]


def skipped_rows(graph: Graph, why: str) -> list[dict[str, Any]]:
    """The stats rows of a matrix-layer pass for the weights it leaves alone (an LSTM's, a
    Gather's table): one per weight, `applied` false and the reason."""
    return [
        {"layer": w.label, "applied": False, "reason": f"{w.node.op}: {why}"}
        for w in weights(graph)
        if get_kernel(w.node.op).int8 != "matrix"
    ]


# -- option text <-> values -----------------------------------------------------------------
def _convert(pass_name: str, field: dataclasses.Field, text: str, options_cls: type) -> Any:
    kind = _base_type(typing.get_type_hints(options_cls)[field.name])
    where = f"pass {pass_name!r}: option {field.name}={text!r}"
    if text.lower() == "none" and field.default is None:
        return None
    if kind is LayerOverrides:
        items = []
        for part in filter(None, text.split(";")):
            key, sep, value = part.partition(":")
            if not sep or not key or not value:
                raise PipelineError(f"{where}: expected NAME:VALUE;NAME:VALUE")
            items.append((key.strip(), value.strip()))
        return LayerOverrides(tuple(items))
    try:
        if kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            value: Any = text.lower() in ("1", "true", "yes", "on")
        elif kind in (int, float):
            value = kind(text)
        else:
            value = text
    except ValueError:
        raise PipelineError(f"{where}: expected {kind.__name__}") from None
    meta = field.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise PipelineError(f"{where}: choose one of {', '.join(meta['choices'])}")
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        raise PipelineError(f"{where}: out of range [{low}, {high}]")
    return value


def _base_type(annotation: Any) -> type:
    """The non-None type of a resolved field annotation."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)
