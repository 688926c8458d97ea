"""dlcc: a model-compression compiler. ONNX -> IR -> Deep Compression passes -> bundle.

The public API is imported lazily so that `import dlcc.runtime` (a deployable runtime that
needs only numpy and construct) never pulls in onnx, onnxruntime or click.

    import dlcc
    bundle = dlcc.compile("model.onnx", "model.bin")
    outputs = dlcc.load("model.bin").run({"image": x}, target="interp")
    dlcc.to_onnx("model.bin", "model_int8.onnx", format="qdq")  # a standard ONNX view
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dlcc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["compile", "load", "load_bytes", "to_onnx", "__version__"]


def __getattr__(name: str):
    if name in ("compile", "load", "load_bytes", "to_onnx"):
        from dlcc import api

        return getattr(api, name)
    raise AttributeError(f"module 'dlcc' has no attribute {name!r}")
