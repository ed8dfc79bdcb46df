"""Per-process caches of what depends on the settings and the endpoints: the settings
themselves, AWS clients, the token signing key, users' store clients and keys.

Lambda reuses a process between invocations, so these are built once; they are registered
here so that whatever switches endpoints in one process (the tests move between moto
in-process and a moto server; `tfbatch stack up` bootstraps before it serves) forgets them all
in one call, instead of each caller knowing every cache.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_registered: list[Any] = []


def per_process(function: Callable | None = None, *, maxsize: int | None = None):
    """functools.lru_cache (unbounded unless `maxsize`), registered for `reset`."""
    def register(wrapped: Callable):
        cached = functools.lru_cache(maxsize=maxsize)(wrapped)
        _registered.append(cached)
        return cached
    return register(function) if function is not None else register


def register(cache: T) -> T:
    """Register a cache of another kind: anything with a `cache_clear` method."""
    _registered.append(cache)
    return cache


def reset() -> None:
    """Forget every registered cache."""
    for cached in _registered:
        cached.cache_clear()
