"""How the pack's nodes word their errors: the node's id first, then the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def node_message(node: str, text: str) -> str:
    """``text`` as the node ``node`` says it (every error a pack node raises reads this way)."""
    return f"{node}: {text}"


@contextmanager
def named_errors(node: str, value: tuple[type[BaseException], ...] = (),
                 runtime: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Re-raise the core's errors with the node's name: ``value`` ones (bad input) as ValueError,
    ``runtime`` ones as RuntimeError. ``value`` is tried first, so it may list subclasses of ``runtime``."""
    try:
        yield
    except value as e:
        raise ValueError(node_message(node, str(e))) from None
    except runtime as e:
        raise RuntimeError(node_message(node, str(e))) from None
