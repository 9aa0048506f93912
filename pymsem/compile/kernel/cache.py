"""numba's on-disk cache for the kernels, invalidated when any of their source files changes.

numba keys a cached function to its own source file only. The kernels call one another across
files (the whole-model kernel calls the likelihood kernel and the prior functions; nutpie's
entry points call the whole-model kernel), and a cached function carries the compiled code of
what it calls: after a change to ``priors.py`` alone, numba would load the whole-model kernel
with the old priors inside. Here every function defined in :data:`SOURCES` is stamped with one
hash of all of them, so a change to any file recompiles them all (once, about 20 s).

Importing this module registers the stamp; the kernel package imports it first.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from numba.core.caching import CacheImpl, InTreeCacheLocator, UserProvidedCacheLocator, UserWideCacheLocator

__all__ = ["SOURCES", "sources_stamp"]

_COMPILE = Path(__file__).resolve().parents[1]
#: The files whose compiled functions call one another.
SOURCES = tuple(
    sorted([*(_COMPILE / "kernel").glob("*.py"), _COMPILE / "nutpie_kernel.py", _COMPILE / "nutpie_cache.py"])
)
_SOURCE_SET = frozenset(str(p) for p in SOURCES)


@cache
def sources_stamp() -> str:
    """One hash of every file in :data:`SOURCES`."""
    h = hashlib.sha256()
    for path in SOURCES:
        h.update(path.read_bytes())
    return h.hexdigest()


class _KernelStamp:
    """A locator mixin: the stamp of all kernel sources, for functions defined in one of them."""

    def get_source_stamp(self) -> Any:
        return ("pymsem-kernel", sources_stamp())

    @classmethod
    def from_function(cls, py_func: Any, py_file: str) -> Any:
        if str(Path(py_file).resolve()) not in _SOURCE_SET:
            return None
        return super().from_function(py_func, py_file)  # type: ignore[misc]


class _UserProvided(_KernelStamp, UserProvidedCacheLocator):
    pass


class _InTree(_KernelStamp, InTreeCacheLocator):
    pass


class _UserWide(_KernelStamp, UserWideCacheLocator):
    pass


for _cls in (_UserWide, _InTree, _UserProvided):  # numba tries them in this order: NUMBA_CACHE_DIR first
    if _cls not in CacheImpl._locator_classes:
        CacheImpl._locator_classes.insert(0, _cls)
