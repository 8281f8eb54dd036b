"""Work prepared ahead on threads, consumed in order: decoding and episode building run
while the GPU answers the previous question (decord and torch release the GIL)."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def prefetched(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int,
               name: str = "tspo-prefetch") -> Iterator[R]:
    """`fn(item)` for every item, in order, with up to `ahead` calls running or done ahead of
    the consumer on `workers` threads; an exception in `fn` is raised where its result is due."""
    if ahead < 1 or workers < 1:
        raise ValueError(f"workers and ahead must be >= 1, got {workers} and {ahead}")
    todo = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        pending: deque[Future[R]] = deque(pool.submit(fn, item) for _, item in zip(range(ahead), todo))
        while pending:
            done = pending.popleft()
            nxt = next(todo, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield done.result()
