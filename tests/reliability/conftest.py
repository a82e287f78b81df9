"""The proxy runs on uvloop in production, so these tests run on uvloop too (the proxy tests' loop)."""

from tests.proxy.conftest import pytest_asyncio_loop_factories

__all__ = ["pytest_asyncio_loop_factories"]
