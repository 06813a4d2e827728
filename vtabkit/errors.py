"""The one exception type for user mistakes.

A `UserError` carries a single line that says what is wrong and what to do. The CLI prints it
without a traceback and exits non-zero; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix (unknown name, missing data, bad YAML, bad model output)."""
