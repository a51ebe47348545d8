"""Keep third-party warnings from escaping into the caller (and from failing a test run that
turns warnings into errors): they describe the input, and the validators report them."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet() -> Iterator[list[str]]:
    """Record every warning raised inside the block; the yielded list holds their messages
    once the block has ended.

    `warnings.catch_warnings` swaps process-wide state, so a warning another thread raises
    meanwhile may be recorded here instead of shown; an acceptable loss for validation code
    that must not emit warnings of its own.
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(dict.fromkeys(str(w.message) for w in caught))
