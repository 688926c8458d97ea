"""The grid of a sweep: pipeline templates with {a|b|c} alternatives, expanded to points.

A template is a pass pipeline (`dlcc passes`) in which `{...|...}` lists alternatives; every
combination is a point. Alternatives nest, and may be empty; the steps an empty alternative
leaves empty disappear:

    prune(sparsity={0.5|0.9}),{|kmeans(bits={4|6}),}quantize,huffman
      -> prune(sparsity=0.5),quantize,huffman        prune(sparsity=0.9),quantize,huffman
         prune(sparsity=0.5),kmeans(bits=4),quantize,huffman   ... (6 points)

So one template covers pruning rates, k-means widths, int8 or float (`{quantize,|}`),
low-rank energies, per-layer overrides (`layers={Conv#0:0.35;Conv:0.85|fc1:0.95}`) and
recovery steps. Several templates add their points; the same pipeline twice is one point
(compared with every option spelled out). The empty pipeline is the fp32 model.
"""

from __future__ import annotations

import dataclasses
import re

from dlcc.errors import DlccError, PipelineError

MAX_POINTS = 10_000

# The default grid: 25 pipelines from fp32 to Deep Compression's; all but plain -O1
# (`quantize`) with the calibration-only recovery steps (refit after pruning and sharing,
# bias correction after int8).
DEFAULT_GRID = (
    "{|prune(sparsity=0.9),refit|kmeans(bits=5),refit|quantize}",
    "{|kmeans(bits={6|4}),refit,}quantize,biascorrect,huffman",
    "prune(sparsity={0.5|0.8|0.9|0.95}),refit,{|kmeans(bits={6|4}),refit,}"
    "quantize,biascorrect,huffman",
    "prune(sparsity=0.92,layers=Conv#0:0.35;Conv:0.85),refit,{|kmeans(bits={6|4}),refit,}"
    "quantize,biascorrect,huffman",
    "lowrank(energy={0.8|0.9|0.95}),refit,quantize,biascorrect,huffman",
)


@dataclasses.dataclass(frozen=True)
class Point:
    """One pipeline of the grid: its position, its text (feed it to `--passes`), a short
    label for tables and plots, and the text with every option spelled out (the cache key)."""

    index: int
    pipeline: str
    label: str
    resolved: str


def expand(template: str) -> list[str]:
    """Every pipeline text `template` stands for, in order (first alternatives first)."""
    out = [_tidy(t) for t in _expand(template, template)]
    if len(out) > MAX_POINTS:
        raise DlccError(f"grid {template!r}: {len(out)} points; at most {MAX_POINTS}")
    return out


def _expand(text: str, template: str) -> list[str]:
    depth, start = 0, -1
    for i, c in enumerate(text):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                raise DlccError(f"grid {template!r}: '}}' without its '{{'")
            if depth == 0:
                rest = _expand(text[i + 1 :], template)
                heads = [a for alt in _split(text[start + 1 : i]) for a in _expand(alt, template)]
                if len(heads) * len(rest) > MAX_POINTS:
                    raise DlccError(f"grid {template!r}: more than {MAX_POINTS} points")
                return [text[:start] + h + r for h in heads for r in rest]
        elif c == "|" and depth == 0:
            raise DlccError(f"grid {template!r}: '|' outside {{...}} at column {i + 1}")
    if depth:
        raise DlccError(f"grid {template!r}: '{{' without its '}}'")
    return [text]


def _split(text: str) -> list[str]:
    """`text` cut at the '|' not inside a nested {...}."""
    parts, depth, last = [], 0, 0
    for i, c in enumerate(text):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "|" and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    return parts + [text[last:]]


def _tidy(text: str) -> str:
    """Drop the empty steps an empty alternative leaves (commas outside parentheses)."""
    steps, depth, last = [], 0, 0
    for i, c in enumerate(text + ","):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "," and depth == 0:
            steps.append(text[last:i].strip())
            last = i + 1
    return ",".join(s for s in steps if s)


def parse_grid(templates: tuple[str, ...] | list[str] = ()) -> list[Point]:
    """The points of `templates` (default: DEFAULT_GRID); a DlccError names a bad one."""
    from dlcc.passes.manager import parse_pipeline

    points: list[Point] = []
    seen: set[str] = set()
    labels: set[str] = set()
    for template in templates or DEFAULT_GRID:
        for text in expand(template):
            try:
                pipeline = parse_pipeline(text)
            except PipelineError as e:
                raise DlccError(f"grid {template!r}: point {text!r}: {e}") from None
            resolved = str(pipeline.resolved())
            if resolved in seen:
                continue
            seen.add(resolved)
            name = label(pipeline)
            name = f"{name}#{len(points)}" if name in labels else name  # the first keeps it
            labels.add(name)
            points.append(Point(len(points), str(pipeline), name, resolved))
            if len(points) > MAX_POINTS:
                raise DlccError(f"grid: more than {MAX_POINTS} points")
    if not points:
        raise DlccError("grid: no points")
    return points


# The short names of a label: the main option's value follows; '*' marks per-layer values.
_SHORT = {
    "prune": ("p", ("sparsity", "quality")),
    "filters": ("f", ("fraction",)),
    "lowrank": ("lr", ("energy", "ratio")),
    "kmeans": ("k", ("bits",)),
    "quantize": ("int8", ()),
    "huffman": ("h", ()),
    "equalize": ("eq", ()),
    "finetune": ("ft", ("epochs",)),
}
_RECOVERY = {"refit": "r", "biascorrect": "b"}  # appended to the step before them


def label(pipeline) -> str:
    """A short label of a parsed pipeline: `p0.9r+k4r+int8b+h`; `fp32` for no passes."""
    parts: list[str] = []
    for step in pipeline.steps:
        options = dict(step.options)
        if step.name in _RECOVERY and parts:
            parts[-1] += _RECOVERY[step.name]
            continue
        if step.name == "sensitivity":
            continue
        short, keys = _SHORT.get(step.name, (step.name, ()))
        value = next((options[k] for k in keys if k in options), "")
        value = re.sub(r"^0\.", ".", value) if re.fullmatch(r"0\.\d+", value) else value
        parts.append(short + value + ("*" if options.get("layers") else ""))
    return "+".join(parts) or "fp32"
