"""The one exception hierarchy of dlcc: every expected failure is a DlccError.

The CLI turns a DlccError into one line on stderr (`dlcc: error: ...`) and exit code 2;
anything else escaping is a bug. Messages name the file, node, pass or section at fault.
"""


class DlccError(Exception):
    """Root of every expected failure."""


class FrontendError(DlccError):
    """The ONNX file cannot be read, checked or lowered."""


class UnsupportedOpError(FrontendError):
    """The model uses op types dlcc does not lower; the message lists all of them."""


class PipelineError(DlccError):
    """A pass pipeline string or option is malformed or out of range."""


class PassError(DlccError):
    """A pass failed on a graph; the message names the pass and the ones before it."""


class BundleFormatError(DlccError):
    """A bundle is malformed; the message names the section (and offset) at fault."""


class ExecutionError(DlccError):
    """A bundle cannot run on the given inputs or target."""
