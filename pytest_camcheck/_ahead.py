"""Work done one item ahead in a background thread, while the caller's thread runs the model on the item before:
the dataset check decodes the next batch of pictures, the faithfulness check builds and preprocesses the next
chunk of perturbed copies.

Example:
    >>> list(one_ahead(lambda n: n * n, range(4), "example"))
    [0, 1, 4, 9]
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["one_ahead"]

T = TypeVar("T")
R = TypeVar("R")


def one_ahead(make: Callable[[T], R], items: Iterable[T], name: str) -> Iterator[R]:
    """``make(item)`` for every item, in order; each is made in a background thread (named ``name``...) while the
    caller still works on the one before. The items themselves are drawn in the caller's thread, when the one
    before is handed over. An error of ``make`` is raised where its result is taken; leaving the loop early waits
    for the one item then in the making. Wrap it in ``contextlib.closing`` where the loop can end by an error: a
    generator left that way stops its thread only when it is closed, and a kept traceback keeps it open."""
    found = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
        pending = _next(pool, make, found)
        while pending is not None:
            result = pending.result()
            pending = _next(pool, make, found)
            yield result


def _next(pool: ThreadPoolExecutor, make: Callable[[T], R], found: Iterator[T]) -> Future[R] | None:
    for item in found:
        return pool.submit(make, item)
    return None
