"""Where a bundle's bytes went: from the model's fp32 weights to the file, by pass and tensor.

`waterfall(description)` reads `dlcc.explain.describe`'s output (the pass log in META, the
tensors and their streams, the file size) and returns the steps of a waterfall:

    fp32 weights        the model's float weights at 4 bytes each (the compile report's)
    one step per pass   that changes sizes (lowrank, filters, prune, kmeans, quantize): the
                        change of the weight layers' *estimated* stored size, from the log's
                        per-layer counts, each layer as   values + positions + codebook:
                          values     nonzeros x value bits (32 float, 8 int8, the codebook
                                     index width ceil(log2 clusters) after kmeans)
                          positions  none when dense, else the smaller of a bitmask and
                                     4-bit relative indices
                          codebook   clusters x 4 bytes (1 after quantize)
    encoding            the real tensors' raw-coded bytes minus that estimate (what the
                        encoder's choice of bitmask or CSR, filler entries, scales and
                        alignment add or save beyond the estimate)
    huffman             the Huffman-coded streams' saving over their raw bits (exact)
    container           metadata, program, tables, header and padding (exact)
    bundle              the file size: every step above adds up to it

`by_tensor(description)` gives each tensor's fp32 size beside its stored size.
"""

from __future__ import annotations

import math

from dlcc.passes.manager import layer_rows

POSITION_BITS = 4  # the estimate's relative-index width (the encoder picks 3..8 per tensor)


def _layer_bytes(s: dict) -> float:
    dense = s["nonzero"] >= s["params"]
    values = (s["params"] if dense else s["nonzero"]) * s["value_bits"] / 8
    positions = 0 if dense else min(s["params"] / 8, s["nonzero"] * POSITION_BITS / 8)
    return values + positions + s["codebook"] * s["codebook_bits"] / 8


def _state(layers: dict, name: str, params: int, entered: list) -> dict:
    """The layer's state, created (fp32, dense) the first time the log names it, its fp32
    bytes then added to `entered`; a factor of a low-rank split (`L/u`, `L/v`) replaces its
    parent `L` instead (the parent's bytes were counted)."""
    if name not in layers:
        parent = name.rsplit("/", 1)[0]
        factor = layers.pop(parent, None) is not None or any(
            n.rsplit("/", 1)[0] == parent for n in layers
        )
        if not factor:
            entered.append(4 * params)
        layers[name] = {
            "params": params, "nonzero": params, "value_bits": 32, "codebook": 0,
            "codebook_bits": 32,
        }  # fmt: skip
    return layers[name]


def _apply(kind: str, rows: list[dict], layers: dict, entered: list) -> None:
    """Update the layers' states with one pass's per-layer log rows."""
    for row in rows:
        name = row.get("layer")
        params = row.get("params", row.get("params_before"))
        if name is None or (params is None and name not in layers):
            continue
        s = _state(layers, name, params, entered)
        if kind == "lowrank" and row.get("applied"):
            s.update(params=row["params_after"], nonzero=row["params_after"])
        elif kind == "filters" and row.get("applied"):
            removed = row.get("params_removed") or 0
            s.update(params=max(0, s["params"] - removed), nonzero=max(0, s["nonzero"] - removed))
        elif kind == "prune":
            s.update(params=row["params"], nonzero=row["nonzero_after"])
        elif kind == "kmeans":
            clusters = max(1, int(row.get("clusters") or 2 ** row["bits"]))
            s.update(value_bits=max(1, math.ceil(math.log2(clusters))), codebook=clusters)
        elif kind == "quantize":
            s.update(**({"codebook_bits": 8} if s["codebook"] else {"value_bits": 8}))


def waterfall(description: dict) -> list[dict]:
    """[{step, delta, total, kind: "total" | "pass" | "exact", estimated}] (module doc)."""
    meta = description["meta"]
    tensors = description["tensors"]
    fp32 = (meta.get("report") or {}).get("fp32_weight_bytes")
    if fp32 is None:
        fp32 = sum(4 * t["params"] for t in tensors)
    steps = [{"step": "fp32 weights", "delta": fp32, "total": fp32, "kind": "total"}]
    layers: dict[str, dict] = {}
    start = 0  # the fp32 bytes of the layers the log has named
    estimate = 0.0
    for entry in meta.get("log", []):
        kind = entry["pass"].split("(")[0]
        if kind not in ("lowrank", "filters", "prune", "kmeans", "quantize"):
            continue
        before = sum(_layer_bytes(s) for s in layers.values())
        entered: list[int] = []  # layers first named now enter at fp32: no change of theirs
        _apply(kind, layer_rows(entry), layers, entered)
        start += sum(entered)
        estimate = sum(_layer_bytes(s) for s in layers.values())
        steps.append(_step(kind, estimate - before - sum(entered), steps, "pass", estimated=True))
    other = fp32 - start  # biases and other tensors: their bytes do not change
    huffman_gain = sum(
        s["raw_bytes"] - s["bytes"]
        for t in tensors
        for s in t["streams"].values()
        if s["coding"] == "huffman"
    )
    stored = sum(t["bytes"] for t in tensors)
    raw = stored + huffman_gain
    steps.append(_step("encoding", raw - estimate - other, steps))
    if huffman_gain:
        steps.append(_step("huffman", -huffman_gain, steps))
    steps.append(_step("container", description["file_bytes"] - stored, steps))
    total = description["file_bytes"]
    steps.append({"step": "bundle", "delta": total, "total": total, "kind": "total"})
    return steps


def _step(name: str, delta: float, steps: list[dict], kind: str = "exact", estimated=False):
    names = [s["step"] for s in steps]
    label = name if name not in names else f"{name} {names.count(name) + 1}"
    total = steps[-1]["total"] + delta
    return {"step": label, "delta": delta, "total": total, "kind": kind, "estimated": estimated}


def by_tensor(description: dict, limit: int = 12) -> list[dict]:
    """The `limit` largest tensors (by fp32 size): name, fp32 bytes, stored bytes; the rest
    summed into one row."""
    rows = sorted(
        ({"tensor": t["name"], "fp32_bytes": 4 * t["params"], "bytes": t["bytes"]}
         for t in description["tensors"]),
        key=lambda r: (-r["fp32_bytes"], r["tensor"]),
    )  # fmt: skip
    if len(rows) > limit:
        rest = rows[limit - 1 :]
        rows = rows[: limit - 1] + [
            {
                "tensor": f"{len(rest)} others",
                "fp32_bytes": sum(r["fp32_bytes"] for r in rest),
                "bytes": sum(r["bytes"] for r in rest),
            }
        ]
    return rows
