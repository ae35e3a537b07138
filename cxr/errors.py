"""The project's own exceptions.

Every error that bad outside input can cause is a subclass of ``CxrError`` (itself a ``ValueError``),
so a caller (the command line, a page) can catch one type and show its message: what was received,
what was expected, and what to do.
"""


class CxrError(ValueError):
    """Bad input from outside the program (a file, an upload, a setting)."""


class ImageError(CxrError):
    """An image that cannot be decoded or is refused (empty, truncated, too large, not an image)."""


class DatasetError(CxrError):
    """A data set that cannot be imported or a cache that cannot be read."""


class ModelFileError(CxrError):
    """A model file that cannot be loaded safely (unsafe code, truncated, wrong input size)."""


class RunError(CxrError):
    """A run directory that is missing, incomplete, or in a state that forbids the request."""


class DeploymentError(CxrError):
    """A deployment setting from the environment (``CXR_MODE``, the demo limits, the audit log) that is invalid."""
