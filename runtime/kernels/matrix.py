"""Matrix-multiply ops: Dense and Conv, with the im2col lowering Conv is built on.

Conv runs as one batched matrix multiply per group (SCALE-Sim layout):

    patches = im2col(x, (kh, kw), attrs)      # [G, N*OH*OW, kh*kw*C/G]    (M x K)
    weights = conv_weight_matrix(w, G)         # [G, kh*kw*C/G, M_out/G]    (K x N)
    y       = conv_from_matmul(patches @ weights, N, OH, OW)

A large batch runs in chunks of whole images whose patches stay in cache (PATCH_BYTES).
The K axis is ordered (kh, kw, c) in both operands, so a systolic-array emulator can reuse
`im2col` and `conv_weight_matrix` as they are. A depthwise Conv (one input channel per group)
runs tap by tap instead (kernels/depthwise.py): the same sums, without thousands of tiny GEMMs.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from dlcc.errors import ExecutionError
from dlcc.runtime.kernels import F32, I8, I32, NoAttrs, WeightInput, check, register_kernel
from dlcc.runtime.kernels.constants import derived
from dlcc.runtime.kernels.depthwise import depthwise_conv, exact_taps, is_depthwise
from dlcc.runtime.kernels.elementwise import unbroadcast
from dlcc.runtime.kernels.strided import padded_nhwc, strided_view

MAX_GEOMETRY = (1 << 31) - 1  # strides, pads, dilations: int32, so index arithmetic fits int64


@dataclasses.dataclass(frozen=True)
class ConvAttrs:
    """2-D convolution attributes; pads in ONNX order (top, left, bottom, right)."""

    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1

    def __post_init__(self) -> None:
        check_window(self.strides, self.pads, self.dilations)
        check(self.group >= 1, f"group {self.group} < 1")


def check_window(strides, pads, dilations) -> None:
    """The domain of a window op's geometry: strides and dilations >= 1, pads >= 0."""
    check(min(strides) >= 1, f"strides {strides}: each must be >= 1")
    check(min(dilations) >= 1, f"dilations {dilations}: each must be >= 1")
    check(min(pads) >= 0, f"pads {pads}: each must be >= 0")
    check(max(*strides, *dilations, *pads) <= MAX_GEOMETRY, f"geometry above {MAX_GEOMETRY}")


def conv_output_hw(h: int, w: int, kernel_hw: tuple[int, int], attrs) -> tuple[int, int]:
    """(OH, OW) of a window op: out = (in + pad_begin + pad_end - dil*(k-1) - 1) // stride + 1."""
    top, left, bottom, right = attrs.pads
    (kh, kw), (sh, sw), (dh, dw) = kernel_hw, attrs.strides, attrs.dilations
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    return oh, ow


def conv_geometry(x: tuple, w: tuple, attrs: ConvAttrs) -> tuple[int, int]:
    """(OH, OW) of Conv(x, w); ValueError unless x [N, C, H, W] and w [M, C/G, kh, kw] fit."""
    return _conv_geometry(tuple(x), tuple(w), attrs)


@functools.lru_cache(maxsize=1024)  # per layer and input size: a run formats no message
def _conv_geometry(x: tuple, w: tuple, attrs: ConvAttrs) -> tuple[int, int]:
    check(len(x) == 4 and len(w) == 4, f"Conv takes 4-D x and w, got {x} and {w}")
    check(x[1] == w[1] * attrs.group, f"x has {x[1]} channels, w {w[1]} x group {attrs.group}")
    check(w[0] % attrs.group == 0, f"{w[0]} filters do not split into {attrs.group} groups")
    oh, ow = conv_output_hw(x[2], x[3], (w[2], w[3]), attrs)
    check(oh >= 1 and ow >= 1, f"Conv of {x} by {w} with {attrs} has no output pixel")
    return oh, ow


def im2col(x: np.ndarray, kernel_hw: tuple[int, int], attrs: ConvAttrs) -> np.ndarray:
    """Conv input patches: x[N, C, H, W] -> [G, N*OH*OW, kh*kw*C/G], K ordered (kh, kw, c).

    Row p = (n, oh, ow) holds the zero-padded receptive field of output pixel (oh, ow) of
    image n, restricted to the C/G input channels of group g.
    """
    n, c, h, w = x.shape
    kh, kw = kernel_hw
    g = attrs.group
    cg = c // g
    oh, ow = conv_output_hw(h, w, kernel_hw, attrs)
    if h == w == kh == kw == g == 1 and not any(attrs.pads):  # the input itself
        return x.reshape(1, n, c)  # (a 1x1 map's pointwise conv: squeeze-excite layers)
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    xp = padded_nhwc(x, attrs.pads)  # one copy: each patch row gathers contiguous channels
    s_n, s_h, s_w, s_c = xp.strides
    windows = strided_view(
        xp,
        shape=(g, n, oh, ow, kh, kw, cg),
        strides=(cg * s_c, s_n, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c),
    )
    return np.ascontiguousarray(windows).reshape(g, n * oh * ow, kh * kw * cg)


def conv_weight_matrix(w: np.ndarray, group: int) -> np.ndarray:
    """Conv filters as matmul operand: w[M, C/G, kh, kw] -> [G, kh*kw*C/G, M/G] (once per
    constant filter tensor: kernels.constants)."""
    return derived(w, f"conv-matrix/{group}", lambda v: _conv_weight_matrix(v, group))


def _conv_weight_matrix(w: np.ndarray, group: int) -> np.ndarray:
    m, cg, kh, kw = w.shape
    wg = w.reshape(group, m // group, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(wg).reshape(group, kh * kw * cg, m // group)


def conv_weight_from_matrix(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of conv_weight_matrix: [G, kh*kw*C/G, M/G] -> w[M, C/G, kh, kw]."""
    out, cg, kh, kw = shape
    g = m.shape[0]
    return m.reshape(g, kh, kw, cg, out // g).transpose(0, 4, 3, 1, 2).reshape(shape)


def grouped_matmul(patches: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """y[g] = patches[g] @ weights[g]: [G, P, K] x [G, K, M] -> [G, P, M] (maybe a view).

    One patch row (a 1x1 map at batch 1) is taken as (weights^T @ patches^T)^T: OpenBLAS's
    matrix-vector product in that orientation ran up to 1.2x faster. With more rows the direct
    product was faster for every shape measured (P = 4..256 rows, K = 576..4608, M = 64..512:
    the transposed one took 1.07-1.53x as long; ResNet-18 at batch 1 ran 0.87x as long).
    """
    integer = patches.dtype.kind in "iu"
    if integer:  # the float32 copies first, so a constant filter matrix converts once
        patches, weights = as_float32(patches), as_float32(weights)
    return _grouped_product(patches, weights, integer)


def _grouped_product(patches, weights, integer: bool, int32: bool = True) -> np.ndarray:
    """grouped_matmul of float32 operands (`integer`, `int32`: as _product)."""
    if patches.shape[0] == 1:  # numpy's stacked matmul of one group is ~10x slower than 2-D
        a, b = patches[0], weights[0]
        if a.shape[0] == 1 and b.shape[1] > 1:
            return _product(b.T, a.T, integer, int32).T[None]
        return _product(a, b, integer, int32)[None]
    if patches.shape[1] == 1 and weights.shape[2] > 1:
        wt, pt = weights.transpose(0, 2, 1), patches.transpose(0, 2, 1)
        return _product(wt, pt, integer, int32).transpose(0, 2, 1)
    return _product(patches, weights, integer, int32)


# int8 x int8 products are at most 128^2 = 2^14 in magnitude, so a float32 sum of up to
# EXACT_K of them never leaves the 2^24 range where float32 holds every integer exactly.
EXACT_K = (1 << 24) // (128 * 128)


def as_float32(a: np.ndarray) -> np.ndarray:
    """An integer operand as float32 (exact for int8), once per constant tensor."""
    return derived(a, "float32", lambda v: v.astype(np.float32))


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b; integer operands give the exact int32 accumulation (as the TPU's accumulators).

    Integers go through float32 BLAS (SGEMM), which is exact while every partial sum stays
    below 2^24 in magnitude, whatever order BLAS adds in: K is split into blocks of EXACT_K,
    each block's product exact, summed in int32. Several times faster than numpy's integer
    matmul or float64 DGEMM. A constant weight's float32 copy is made once.
    """
    integer = a.dtype.kind in "iu"
    if integer:
        a, b = as_float32(a), as_float32(b)
    return _product(a, b, integer)


def _product(a: np.ndarray, b: np.ndarray, integer: bool, int32: bool = True) -> np.ndarray:
    """a @ b of float32 operands; `integer`: they hold int8 values, the result is their exact
    sums, as int32 (or, with `int32` False and K <= EXACT_K, the float32 product itself)."""
    if not integer:
        return np.matmul(a, b)
    k = a.shape[-1]
    if k <= EXACT_K:
        y = np.matmul(a, b)
        return y.astype(np.int32) if int32 else y
    out = None
    for start in range(0, k, EXACT_K):
        block = slice(start, start + EXACT_K)
        part = np.matmul(a[..., block], b[..., block, :]).astype(np.int32)
        out = part if out is None else np.add(out, part, out=out)
    return out


def dense_accumulators(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w of int8 operands: the exact int32 sums, as the float32 SGEMM result where every
    sum is below 2^24 (K <= EXACT_K), so a reader that takes them as numbers (the Activate
    unit) skips a cast that only round-trips; as int32 otherwise."""
    return _product(as_float32(x), as_float32(w), True, int32=False)


def conv_from_matmul(y: np.ndarray, n: int, oh: int, ow: int, copy: bool = True) -> np.ndarray:
    """Matmul result back to NCHW: y[G, N*OH*OW, M/G] -> [N, M, OH, OW] (without `copy`: a
    strided view where one group allows it)."""
    g, _, mg = y.shape
    out = y.reshape(g, n, oh, ow, mg).transpose(1, 0, 4, 2, 3)
    return (np.ascontiguousarray(out) if copy else out).reshape(n, g * mg, oh, ow)


def matrix_dtype(attrs, x: str, w: str, b: str | None = None) -> str:
    """float32 operands give float32; int8 x int8 accumulates in int32 (bias added later)."""
    if (x, w, b) in ((F32, F32, None), (F32, F32, F32)):
        return F32
    check((x, w, b) == (I8, I8, None), f"takes float32 or int8 operands, got {x}, {w}, {b}")
    return I32


def _dense_shape(attrs, x, w, b=None):
    check(len(x) >= 1 and len(w) == 2, f"Dense takes x [..., K] and w [K, N], got {x}, {w}")
    check(x[-1] == w[0], f"Dense of x {x} by w {w}: K differs")
    check(b is None or tuple(b) in ((w[1],), (1, w[1])), f"bias {b} for {w[1]} outputs")
    return ((*x[:-1], w[1]),)


def _dense_workspace(attrs, x, w, b=None) -> int:
    """exact_matmul's wider copies of integer operands."""
    return math.prod(x) + math.prod(w)


def _dense_grad(attrs, args, y, dy, want):
    x, w = args[0], args[1]
    dx = dy @ np.swapaxes(w, -1, -2) if want[0] else None
    dw = unbroadcast(np.swapaxes(x, -1, -2) @ dy, w.shape) if want[1] else None
    db = unbroadcast(dy, args[2].shape) if len(args) > 2 and want[2] else None
    return [dx, dw, db]


@register_kernel(
    "Dense",
    NoAttrs,
    shape=_dense_shape,
    dtype=matrix_dtype,
    workspace=_dense_workspace,
    grad=_dense_grad,
    int8="matrix",
    weights=(WeightInput(1, "W", channel_axis=1),),  # [K, N]
)
def dense(attrs, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """y = x @ w + b over the last axis of x (w is [K, N]); int8 operands accumulate in int32."""
    y = exact_matmul(x, w)
    if b is not None:
        y += b
    return y


def _conv_shape(attrs: ConvAttrs, x, w, b=None):
    oh, ow = conv_geometry(x, w, attrs)
    check(b is None or tuple(b) == (w[0],), f"bias {b} for {w[0]} filters")
    return ((x[0], w[0], oh, ow),)


def _conv_workspace(attrs: ConvAttrs, x, w, b=None) -> int:
    """The zero-padded NHWC copy plus the im2col patches."""
    n, c, h, wd = x
    top, left, bottom, right = attrs.pads
    oh, ow = conv_output_hw(h, wd, (w[2], w[3]), attrs)
    return n * c * (h + top + bottom) * (wd + left + right) + n * oh * ow * w[2] * w[3] * c


def col2im(dpatches: np.ndarray, shape, attrs: ConvAttrs, kernel_hw) -> np.ndarray:
    """The adjoint of im2col: patch gradients [G, N*OH*OW, K] summed back onto x[N, C, H, W]."""
    n, c, h, wd = shape
    g, (kh, kw) = attrs.group, kernel_hw
    oh, ow = conv_output_hw(h, wd, (kh, kw), attrs)
    top, left, bottom, right = attrs.pads
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    d = dpatches.reshape(g, n, oh, ow, kh, kw, c // g).transpose(1, 2, 3, 4, 5, 0, 6)
    d = d.reshape(n, oh, ow, kh, kw, c)
    dxp = np.zeros((n, h + top + bottom, wd + left + right, c), dpatches.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            dxp[:, rows, slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)] += d[:, :, :, i, j]
    return np.ascontiguousarray(dxp[:, top : top + h, left : left + wd].transpose(0, 3, 1, 2))


def _conv_grad(attrs: ConvAttrs, args, y, dy, want):
    x, w = args[0], args[1]
    m, cg, kh, kw = w.shape
    g, (n, _, oh, ow) = attrs.group, dy.shape
    # dL/d(patches @ weights), in the [G, N*OH*OW, M/G] layout of the forward matmul.
    dmat = dy.reshape(n, g, m // g, oh, ow).transpose(1, 0, 3, 4, 2).reshape(g, -1, m // g)
    grads = [None] * len(args)
    if want[1]:
        dwm = im2col(x, (kh, kw), attrs).transpose(0, 2, 1) @ dmat  # [G, kh*kw*C/G, M/G]
        grads[1] = conv_weight_from_matrix(dwm, w.shape)
    if want[0]:
        dpatches = dmat @ conv_weight_matrix(w, g).transpose(0, 2, 1)
        grads[0] = col2im(dpatches, x.shape, attrs, (kh, kw))
    if len(args) > 2 and want[2]:
        grads[2] = dy.sum(axis=(0, 2, 3))
    return grads


@register_kernel(
    "Conv",
    ConvAttrs,
    shape=_conv_shape,
    dtype=matrix_dtype,
    workspace=_conv_workspace,
    grad=_conv_grad,
    int8="matrix",
    weights=(WeightInput(1, "W", channel_axis=0),),  # [M, C/G, kh, kw]
)
def conv(attrs: ConvAttrs, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None):
    """y[n, m, oh, ow] = sum_{c,i,j} x_pad[n, c_g(m)+c, oh*s+i*d, ow*s+j*d] * w[m, c, i, j] + b[m]

    Lowered as grouped_matmul(im2col(x), conv_weight_matrix(w)); c_g(m) = first input channel
    of m's group.
    """
    y = _conv(attrs, x, w, int32=True)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv_accumulators(attrs: ConvAttrs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Conv of int8 operands without bias, as `dense_accumulators` gives them (float32
    holding the exact int32 sums where K = kh*kw*C/G <= EXACT_K, int32 otherwise), shaped
    [N, M, OH, OW] but laid out as the product left them (a strided view, for a reader that
    follows the memory order: the Activate unit transposes its int8 result, 4x fewer bytes)."""
    return _conv(attrs, x, w, int32=False)


def _conv(attrs: ConvAttrs, x: np.ndarray, w: np.ndarray, int32: bool) -> np.ndarray:
    """Conv without bias (`int32`: as _product; False: as conv_accumulators, a view)."""
    try:
        oh, ow = conv_geometry(x.shape, w.shape, attrs)
    except ValueError as e:
        raise ExecutionError(str(e)) from None
    kernel_hw = (w.shape[2], w.shape[3])
    integer = x.dtype.kind in "iu"
    if is_depthwise(x.shape, w.shape, attrs.group) and (not integer or exact_taps(w.shape)):
        y = depthwise_conv(attrs, x, as_float32(w) if integer else w, oh, ow)
        if int32:
            y = np.ascontiguousarray(y, dtype=np.int32 if integer else np.float32)
        return y
    if integer:  # widen the input once, not its kh*kw-times larger patches
        x, w = x.astype(np.float32), as_float32(w)
    cg = w.shape[1]
    nhwc_run = kernel_hw[1] * cg if attrs.dilations[1] == 1 and attrs.group == 1 else cg
    # Channel-major where its columns gather longer runs from NCHW, and for a 1x1 kernel
    # without pads, whose columns are the input itself (strided: its pixels subsampled)
    pointwise = kernel_hw == (1, 1) and not any(attrs.pads) and oh * ow > 1
    lowering = _conv_channel_major if ow > nhwc_run or pointwise else _conv_patches
    n = x.shape[0]
    per = n  # images per chunk; a 1x1 conv's columns are its input (or a subsample)
    if n > 1 and not pointwise:
        image = oh * ow * kernel_hw[0] * kernel_hw[1] * x.shape[1]  # patch entries per image
        per = max(1, PATCH_BYTES // (4 * image), PATCH_ROWS // (oh * ow))
    if per >= n:
        return lowering(attrs, x, w, oh, ow, integer, int32)
    out = None  # chunks of the batch (see PATCH_BYTES), joined
    for i in range(0, n, per):
        y = lowering(attrs, x[i : i + per], w, oh, ow, integer, int32, whole=False)
        if out is None:
            out = np.empty((n, *y.shape[1:]), y.dtype)
        out[i : i + per] = y
    return out


# A large batch runs in chunks of whole images whose patches (about PATCH_BYTES) are written,
# multiplied and laid out while they are in cache; one product over the whole batch wrote and
# read back patches of hundreds of MB (ResNet-18's 3x3 convs at batch 256 ran 1.2-1.6x slower)
PATCH_BYTES = 1 << 21
PATCH_ROWS = 512  # ... but at least this many rows: a short GEMM runs below BLAS's speed


def _conv_patches(attrs: ConvAttrs, x, w, oh, ow, integer: bool, int32: bool, whole=True):
    """Conv as grouped_matmul(im2col(x), conv_weight_matrix(w)); `whole`: x is the whole
    batch, so the result may be the product's own layout (a view) without `int32`, and is
    NCHW with it (a chunk's is a view, copied into the batch's result by the caller)."""
    y = _grouped_product(
        im2col(x, (w.shape[2], w.shape[3]), attrs),
        conv_weight_matrix(w, attrs.group),
        integer,
        int32,
    )
    return conv_from_matmul(y, x.shape[0], oh, ow, copy=int32 and whole)


def _conv_channel_major(attrs: ConvAttrs, x, w, oh, ow, integer: bool, int32: bool, whole=True):
    """Conv as w[G, M/G, (c, i, j)] @ columns[N, G, (c, i, j), OH*OW] (Caffe's im2col, per
    image): each column row copies runs of OW pixels straight from the NCHW input, and the
    products come out as NCHW itself, [N, G, M/G, OH*OW]: no transpose after (one GEMM per
    image and group, up to 2x faster than one GEMM over the batch and a transposing copy).
    (`whole` as `_conv_patches` takes it; the product here is NCHW already.)"""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    g = attrs.group
    top, left, bottom, right = attrs.pads
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(attrs.pads):  # the columns are x itself
        columns = np.ascontiguousarray(x).reshape(n * g, cg, oh * ow)
    else:
        if any(attrs.pads):
            xp = np.zeros((n, c, h + top + bottom, wd + left + right), x.dtype)
            xp[:, :, top : top + h, left : left + wd] = x
        else:
            xp = np.ascontiguousarray(x)
        s_n, s_c, s_h, s_w = xp.strides
        windows = strided_view(
            xp,
            shape=(n, g, cg, kh, kw, oh, ow),
            strides=(s_n, cg * s_c, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
        )
        columns = np.ascontiguousarray(windows).reshape(n * g, cg * kh * kw, oh * ow)
    weights = w.reshape(g, m // g, cg * kh * kw)
    if n * g == 1:  # numpy's stacked matmul of one matrix is ~10x slower than 2-D
        y = _product(weights[0], columns[0], integer, int32)
    else:
        y = _product(weights[None], columns.reshape(n, g, -1, oh * ow), integer, int32)
    return y.reshape(n, m, oh, ow)


def _matmul_shape(attrs, a, b):
    """numpy / ONNX MatMul: 1-D operands are promoted and the added axis dropped again."""
    check(len(a) >= 1 and len(b) >= 1, f"MatMul of scalars {a}, {b}")
    a2, b2 = (1, *a) if len(a) == 1 else tuple(a), (*b, 1) if len(b) == 1 else tuple(b)
    check(a2[-1] == b2[-2], f"MatMul of {tuple(a)} by {tuple(b)}: K differs")
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    out = batch + (a2[-2],) * (len(a) > 1) + (b2[-1],) * (len(b) > 1)
    return (out,)


@register_kernel("MatMul", code=63, shape=_matmul_shape)
def matmul(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a @ b, batched over the leading axes with broadcasting (attention's QK^T and PV)"""
    return np.matmul(a, b)


@dataclasses.dataclass(frozen=True)
class ConvTransposeAttrs:
    """2-D transposed convolution; pads (top, left, bottom, right) crop the full output."""

    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    output_padding: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        check_window(self.strides, self.pads, self.dilations)
        check(self.group >= 1, f"group {self.group} < 1")
        fits = all(0 <= p < s for p, s in zip(self.output_padding, self.strides))
        check(fits, f"output_padding {self.output_padding} not below the strides")


def conv_transpose_hw(h: int, w: int, kernel_hw, attrs: ConvTransposeAttrs) -> tuple[int, int]:
    """(OH, OW) = s * (in - 1) + output_padding + d * (k - 1) + 1 - pad_begin - pad_end."""
    top, left, bottom, right = attrs.pads
    sizes = zip((h, w), kernel_hw, attrs.strides, attrs.dilations, attrs.output_padding)
    full = [s * (n - 1) + p + d * (k - 1) + 1 for n, k, s, d, p in sizes]
    return full[0] - top - bottom, full[1] - left - right


def _conv_transpose_shape(attrs: ConvTransposeAttrs, x, w, b=None):
    check(len(x) == 4 and len(w) == 4, f"ConvTranspose takes 4-D x and w, got {x} and {w}")
    check(x[1] == w[0] and x[1] % attrs.group == 0, f"x {x} for weights {w}, group {attrs.group}")
    oh, ow = conv_transpose_hw(x[2], x[3], (w[2], w[3]), attrs)
    check(oh >= 1 and ow >= 1, f"ConvTranspose of {x} by {w} with {attrs} has no output pixel")
    check(b is None or tuple(b) == (w[1] * attrs.group,), f"bias {b}")
    return ((x[0], w[1] * attrs.group, oh, ow),)


def _conv_transpose_workspace(attrs: ConvTransposeAttrs, x, w, b=None) -> int:
    """The product before the scatter, and the uncropped output."""
    oh, ow = conv_transpose_hw(x[2], x[3], (w[2], w[3]), attrs)
    top, left, bottom, right = attrs.pads
    return x[0] * x[2] * x[3] * math.prod(w[1:]) + x[0] * w[1] * attrs.group * (
        oh + top + bottom
    ) * (ow + left + right)


@register_kernel(
    "ConvTranspose",
    ConvTransposeAttrs,
    code=64,
    shape=_conv_transpose_shape,
    workspace=_conv_transpose_workspace,
    weights=(WeightInput(1, "W", channel_axis=1),),  # [C, M/G, kh, kw]
)
def conv_transpose(attrs: ConvTransposeAttrs, x: np.ndarray, w: np.ndarray, b=None):
    """y = the adjoint of Conv(y) -> x: each input pixel scatters x[n, c] * w[c, m] onto the
    output window it would have been computed from (col2im of x @ w), then + b[m]."""
    n, cin, h, wd = x.shape
    g, (mg, kh, kw) = attrs.group, w.shape[1:]
    oh, ow = conv_transpose_hw(h, wd, (kh, kw), attrs)
    xg = x.reshape(n, g, cin // g, h, wd).transpose(1, 0, 3, 4, 2).reshape(g, n * h * wd, -1)
    wg = w.reshape(g, cin // g, mg, kh, kw).transpose(0, 1, 3, 4, 2).reshape(g, cin // g, -1)
    window = ConvAttrs(attrs.strides, attrs.pads, attrs.dilations, g)
    y = col2im(np.matmul(xg, wg), (n, g * mg, oh, ow), window, (kh, kw))
    return y if b is None else y + b.reshape(1, -1, 1, 1).astype(y.dtype)
