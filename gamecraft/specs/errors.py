"""The one error type for requests the user can fix: :class:`RequestError`.

Everything a request can get wrong that its sender can correct — an unknown action, an unreadable image, a
state file of another size, a request the time budget or the GPU's memory refuses — is raised as a
``RequestError`` (a ``ValueError``) with one line that names the input and the problem. Entry points show
that line and no traceback (``predict.py``, the CLI); any other exception is a fault of the server and is
logged with its traceback.
"""

from __future__ import annotations


class RequestError(ValueError):
    """A request the user can fix; the message names the input and what is wrong with it."""
