"""Small additions to the Discord fake needed by the bot tests (kept apart from helper D's files).

- A followup sent after the deferred "thinking…" reply was deleted creates a new message, as Discord does
  (the fake otherwise tries to edit the deleted original and answers 404). The product relies on this to
  turn an error after a public defer into an ephemeral reply.
"""

from __future__ import annotations

from typing import Any

from tests.fakes import discord_rest
from tests.fakes.discord_models import LOADING

_installed = False


def install() -> None:
    """Patch the fake once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    for cls in vars(discord_rest).values():
        if isinstance(cls, type) and "_followup" in vars(cls):
            original = cls._followup

            async def _followup(self: Any, req: Any, _original: Any = original) -> Any:
                handle = self.interactions.get(req.match["token"])
                if handle is not None and handle.original is not None and handle.original.deleted:
                    handle.original.flags &= ~LOADING
                return await _original(self, req)

            cls._followup = _followup
