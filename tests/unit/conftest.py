"""Unit tests may be coroutines: each runs in a fresh event loop (``asyncio.run``).

A :class:`imsbox.store.Store` among its fixtures (also one it uses indirectly) arrives opened and is closed
after the test, so store tests read like the code that uses the store.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from imsbox.store import Store


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    stores = [v for v in pyfuncitem.funcargs.values() if isinstance(v, Store)]
    asyncio.run(_run(pyfuncitem.obj, kwargs, stores))
    return True


async def _run(test: Any, kwargs: dict[str, Any], stores: list[Store]) -> None:
    for store in stores:
        await store.open()
    try:
        await test(**kwargs)
    finally:
        for store in stores:
            await store.close()
