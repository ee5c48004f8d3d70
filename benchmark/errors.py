"""Errors that are the user's to fix: the CLI prints their one-line message and exits 2.

Any other exception is a bug in saliency-bench and keeps its traceback.
"""


class BenchError(ValueError):
    """Base of every user-facing error; ``str(err)`` is one line naming the file, field,
    model, method or image at fault."""
