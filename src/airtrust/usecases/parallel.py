"""Calls to an apiserver in threads: many small requests, each mostly waiting.

Kept apart from the use cases that call it, so a long-running controller (``airtrust
sync``) imports the threads and not the planning code of ``apply``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["WORKERS", "parallel", "parallel_count"]

#: requests in flight at once: enough to keep a busy apiserver's handlers fed
WORKERS = 16
T = TypeVar("T")
R = TypeVar("R")


def parallel(items: Sequence[T], fn: Callable[[T], R], workers: int = WORKERS) -> list[R]:
    """``fn`` over ``items`` in threads, results in order (one item: no thread)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def parallel_count(items: Sequence[T], fn: Callable[[T], object], workers: int = WORKERS) -> int:
    """``fn`` over ``items`` in threads; how many ran. Results are dropped as they
    come, so thousands of apiserver answers are never held at once; the first error
    is raised once the items in flight have finished."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return len(items)
    done = 0
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        window: deque[Future[object]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= workers * 4:
                window.popleft().result()
                done += 1
        for future in window:
            future.result()
            done += 1
    return done
