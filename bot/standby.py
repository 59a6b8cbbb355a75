"""
`vibes bot` with a PostgreSQL database: stand by until this instance holds the lock, then act until it loses it.

A standby connects to neither Discord nor a GPU. Once active it writes the shared-store marker, starts the
orchestrator (which recovers what the last active instance left, exactly as after a restart) and connects to
Discord. When the lock is lost it fences itself: the scheduler stops (no prompt, download or job write more), the
Discord session closes, and the process exits with EXIT_FENCED so that its service manager starts it again as a
standby: a fresh process is simpler to trust than one that half-stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.client import ImGenBot, apply_endpoint_overrides

if TYPE_CHECKING:
    from orchestrator.leadership import Leadership
    from orchestrator.service import Orchestrator

log = logging.getLogger(__name__)

#: the exit status of an instance that lost the lock and stopped (EX_TEMPFAIL: "try again", i.e. restart me)
EXIT_FENCED = 75


async def run_bot_with_leadership(
    make_orchestrator: Callable[[], Orchestrator],
    leadership: Leadership,
    token: str,
    *,
    guild_id: int | None = None,
) -> int:
    """Stand by, then serve; returns 0 when closed normally, EXIT_FENCED after losing the lock."""
    apply_endpoint_overrides()
    orch = make_orchestrator()
    images_dir = orch.settings.storage.images_dir
    await leadership.open()  # a database that cannot be reached at all is an error, not something to wait for
    try:
        # Raises SharedStoreError when this instance does not see the active instance's image store.
        await leadership.take_over(images_dir)
        bot = ImGenBot(orch, guild_id=guild_id)
        bot.leadership = leadership
        return await _serve(bot, leadership, token)
    finally:
        await leadership.close()


async def _serve(bot: ImGenBot, leadership: Leadership, token: str) -> int:
    serving = asyncio.create_task(bot.start(token), name="discord")
    lost = asyncio.create_task(leadership.wait_lost(), name="leadership-lost")
    try:
        done, _ = await asyncio.wait({serving, lost}, return_when=asyncio.FIRST_COMPLETED)
        if lost in done:
            await fence(bot, leadership.settings.fence_s)
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await serving
            return EXIT_FENCED
        serving.result()
        return 0
    finally:
        lost.cancel()
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await serving
        await bot.close()


async def fence(bot: ImGenBot, deadline_s: float) -> None:
    """Stop driving GPUs, then leave Discord, within `deadline_s`; past it the process ends itself at once."""
    try:
        async with asyncio.timeout(deadline_s):
            await bot.orch.fence()
            # discord.py's own close: the gateway first, then the REST session (nothing can be posted after it).
            await super(ImGenBot, bot).close()
    except TimeoutError:
        log.critical("fencing took longer than %.1f s: ending the process now", deadline_s)
        logging.shutdown()
        os._exit(EXIT_FENCED)
    log.warning("fenced: no GPU work and no Discord session any more")
