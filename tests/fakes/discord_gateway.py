"""
The fake Discord's gateway: the WebSocket discord.py connects to, from HELLO and IDENTIFY to DISPATCH events.

A mixin of FakeDiscord (which holds the guild and its payloads) and one GatewaySession per connection.
"""

from __future__ import annotations

import json
import secrets

import aiohttp
from aiohttp import web

from tests.fakes.discord_models import MESSAGE_CONTENT_INTENT, Json


class Gateway:
    """The gateway endpoint: answers heartbeats, identifies, resumes and member requests; dispatches events."""

    # State (self._sockets, self.threads, ...) and payloads (self.guild_payload, ...) live on FakeDiscord.

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sess = GatewaySession(ws)
        self._sockets.append(sess)
        try:
            await sess.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                await self._on_gateway_message(sess, json.loads(msg.data))
        finally:
            self._sockets.remove(sess)
        return ws

    async def _on_gateway_message(self, sess: GatewaySession, msg: Json) -> None:
        op, data = msg.get("op"), msg.get("d")
        if op == 1:
            await sess.send({"op": 11})
        elif op == 2:
            if data["token"] != self.token:
                await sess.ws.close(code=4004, message=b"Authentication failed.")
                return
            self.identify_payloads.append(data)
            sess.intents = int(data.get("intents", 0))
            ready = {
                "v": 10,
                "user": self.bot_user.payload(),
                "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                "session_id": secrets.token_hex(16),
                "resume_gateway_url": self.ws_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            await sess.dispatch("READY", ready)
            await sess.dispatch("GUILD_CREATE", self.guild_payload() | {"threads": [t.payload() for t in self.threads]})
            sess.identified = True
        elif op == 6:
            sess.identified = True
            await sess.dispatch("RESUMED", {})
        elif op == 8:
            members = [self._member(u) for u in [self.bot_user, *self.users]]
            chunk = {"guild_id": str(self.guild_id), "members": members, "chunk_index": 0, "chunk_count": 1}
            if data.get("nonce"):
                chunk["nonce"] = data["nonce"]
            await sess.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def dispatch(self, event: str, data: Json) -> None:
        """Send a DISPATCH event to every identified gateway connection."""
        for sess in list(self._sockets):
            if sess.identified:
                payload = data
                foreign = data.get("author", {}).get("id") != str(self.bot_user.id)
                if event == "MESSAGE_CREATE" and foreign and not sess.intents & MESSAGE_CONTENT_INTENT:
                    # Without the privileged intent Discord blanks other people's message content.
                    payload = data | {"content": "", "embeds": [], "attachments": [], "components": []}
                await sess.dispatch(event, payload)

    async def drop_gateway(self) -> None:
        """Close every gateway connection with 4000 (discord.py reconnects and RESUMEs)."""
        for sess in list(self._sockets):
            await sess.ws.close(code=4000)


class GatewaySession:
    """One gateway connection: its sequence numbers and the intents it identified with."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0
        self.intents = 0
        self.identified = False

    async def send(self, payload: Json) -> None:
        """Send one gateway payload unless the connection is closed."""
        if not self.ws.closed:
            # Text frames: discord.py only zlib-decompresses binary frames.
            await self.ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: Json) -> None:
        """Send one DISPATCH event with the next sequence number."""
        self.seq += 1
        await self.send({"op": 0, "t": event, "s": self.seq, "d": data})
