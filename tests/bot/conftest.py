"""Fixtures for bot tests: the Discord fake, a helper that runs a discord.py client against it, log guards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from tests.fakes.fake_discord import DiscordErrorLogGuard, FakeDiscord, running_client


@pytest.fixture(autouse=True)
def _fail_on_discord_error_logs():
    """discord.py logs exceptions raised in callbacks instead of raising: any ERROR from `discord` fails the test."""
    guard = DiscordErrorLogGuard()
    with guard.installed():
        yield guard
    if guard.records:
        pytest.fail(f"discord logged errors:\n{guard.report()}")


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with discord.py pointed at it; fails the test on unknown routes or fake bugs."""
    fake = FakeDiscord()
    await fake.start()
    try:
        with fake.patch_discord():
            yield fake
    finally:
        await fake.stop()
    assert not fake.unknown_routes, f"routes the fake does not know: {fake.unknown_routes}"
    assert not fake.internal_errors, f"the fake itself failed: {fake.internal_errors}"


@pytest.fixture
async def start_client(fake_discord: FakeDiscord) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`client = await start_client(client)`: log in against the fake and wait for READY; closed at teardown.

    Build clients with `guild_ready_timeout=0.01` to skip discord.py's 2 s wait for guilds.
    """
    async with AsyncExitStack() as stack:

        async def start(client: Any, timeout: float = 10) -> Any:
            return await stack.enter_async_context(running_client(fake_discord, client, timeout))

        yield start
