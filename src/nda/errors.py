"""The one exception type users see for bad input or bad configuration.

Every message names the problem *and* the fix; the CLI prints it as a single line and exits
non-zero, never a traceback.
"""


class NDAError(ValueError):
    """Bad input or configuration for NDA (a `ValueError`, so generic handlers still catch it)."""
