"""Plain messages in a session thread (feedback, "undo", a Concept Builder value) and our modal submits."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import feedback, render
from bot.errors import translate
from bot.views import modals
from bot.views.common import THREAD
from orchestrator.errors import LimitExceeded
from orchestrator.sessions.models import Flow

if TYPE_CHECKING:
    from bot.client import ImGenBot

log = logging.getLogger(__name__)

UNDO_WORDS = frozenset({"undo", "revert"})


async def _answer(message: discord.Message, text: str, *, delete_after: float | None = None) -> None:
    """Reply to a member's message; a reply that cannot be sent (shutting down, thread gone) is only logged."""
    try:
        if delete_after is None:
            await message.reply(text, mention_author=False)
        else:
            await message.reply(text, mention_author=False, delete_after=delete_after)
    except (discord.HTTPException, RuntimeError) as e:
        log.warning("could not answer message %s: %r", message.id, e)


class ThreadCog(commands.Cog):
    """Turns thread replies into pipeline calls; answers modal submits by custom_id."""

    def __init__(self, bot: ImGenBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.modal_submit:
            await modals.handle_submit(interaction)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or not isinstance(message.channel, discord.Thread):
            return
        text = message.content.strip()
        if not text:
            return
        sid = await self.bot.orch.session_for_ref(THREAD, str(message.channel.id))
        if sid is None:
            return
        try:
            await self._reply(message, message.channel, sid, text)
        except LimitExceeded as e:
            # A reply cannot be answered privately: a flood gets one short notice per member and window, which
            # removes itself when the member may try again, instead of one public refusal per message.
            budgets = self.bot.budgets
            if not budgets.notices.take(str(message.author.id)):
                await _answer(message, translate(e).text, delete_after=budgets.notices.seconds or None)
        except Exception as e:  # never let discord.py log it as an ERROR; the translator logs it with a reference
            await _answer(message, translate(e).text)

    async def _reply(self, message: discord.Message, thread: discord.Thread, sid: str, text: str) -> None:
        svc = self.bot.orch
        user = str(message.author.id)
        session = await svc.session(sid)
        if not svc.may_vote(session, user):
            log.debug("session=%s ignoring a message from non-participant %s", sid, user)
            return
        if text.lower() in UNDO_WORDS:
            session = await svc.undo(sid, user)
            await message.reply(render.undo_text(session), mention_author=False)
            return
        if session.flow is Flow.CONCEPT and session.concept is not None and session.concept.current_field:
            self.bot.budgets.typed_value(user)
            async with thread.typing():
                await svc.concept_set_field(sid, user, text)
            await message.reply(render.field_set_text(text, by=user), mention_author=False)
            return
        await feedback.suggest(self.bot, thread, sid, message.author, text)
