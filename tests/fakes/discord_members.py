"""
What the members of the fake guild do: slash commands, autocomplete, clicks, selects, modals and messages.

Each action becomes the interaction or MESSAGE_CREATE Discord would send the bot. A mixin of FakeDiscord.
"""

from __future__ import annotations

import secrets
from typing import Any

from tests.fakes.discord_models import (
    BOT_PERMS,
    EVERYONE_PERMS,
    FakeFile,
    FakeMessage,
    FakeUser,
    InteractionHandle,
    Json,
)


class MemberActions:
    """Actions a test performs as a member: each is dispatched over the gateway as Discord would."""

    # State (self.guild_commands, self.interactions, ...) and helpers (self._member, ...) live on FakeDiscord.

    def _find_command(self, name: str) -> tuple[Json, bool]:
        for cmd in self.guild_commands.get(self.guild_id, []):
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd, True
        for cmd in self.global_commands:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd, False
        known = [c["name"] for c in [*self.global_commands, *self.guild_commands.get(self.guild_id, [])]]
        raise ValueError(f"command {name!r} was not synced; synced commands: {known}")

    def _build_options(
        self, schema: list[Json], values: dict[str, Any], resolved: Json, focused: str | None
    ) -> list[Json]:
        by_name = {o["name"]: o for o in schema}
        unknown = set(values) - set(by_name)
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; the command has {sorted(by_name)}")
        out: list[Json] = []
        for opt in schema:
            name, kind = opt["name"], opt["type"]
            if name not in values:
                if opt.get("required") and name != focused:
                    raise ValueError(f"required option {name!r} missing")
                continue
            value = values[name]
            item: Json = {"name": name, "type": kind}
            if kind in (6, 9) and isinstance(value, FakeUser):
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                member = self._member(value, with_user=False) | {"permissions": str(EVERYONE_PERMS)}
                resolved.setdefault("members", {})[str(value.id)] = member
                value = str(value.id)
            elif kind == 11:
                upload = value if isinstance(value, FakeFile) else FakeFile(*value)
                att = self._store_attachment(self.channel_id, upload)
                resolved.setdefault("attachments", {})[str(att.id)] = att.payload() | {"ephemeral": True}
                value = str(att.id)
            elif kind == 7:
                value = str(value)
                resolved.setdefault("channels", {})[value] = self.channel_payload(int(value)) | {"permissions": "0"}
            item["value"] = value
            if name == focused:
                item["focused"] = True
            out.append(item)
        return out

    def _interaction_base(self, kind: int, user: FakeUser, channel_id: int, data: Json) -> Json:
        return {
            "id": str(self._snow()),
            "application_id": str(self.application_id),
            "type": kind,
            "token": secrets.token_urlsafe(24),
            "version": 1,
            "guild_id": str(self.guild_id),
            "channel_id": str(channel_id),
            "channel": self.channel_payload(channel_id) | {"permissions": str(EVERYONE_PERMS)},
            "member": self._member(user) | {"permissions": str(EVERYONE_PERMS)},
            "app_permissions": str(BOT_PERMS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
            "data": data,
        }

    async def _send_interaction(
        self, kind: int, user: FakeUser, channel_id: int | None, data: Json, message: FakeMessage | None = None
    ) -> InteractionHandle:
        cid = channel_id or (message.channel_id if message else self.channel_id)
        payload = self._interaction_base(kind, user, cid, data)
        if message is not None:
            payload["message"] = message.payload()
        handle = InteractionHandle(
            id=int(payload["id"]),
            token=payload["token"],
            type=kind,
            user=user,
            channel_id=cid,
            payload=payload,
            waiter=self.wait_for,
            message=message,
        )
        self.interactions[handle.token] = handle
        await self.dispatch("INTERACTION_CREATE", payload)
        return handle

    def _command_data(self, name: str, options: dict[str, Any], focused: str | None) -> Json:
        root, *subs = name.split()
        cmd, in_guild = self._find_command(root)
        resolved: Json = {}
        schema = cmd.get("options", [])
        chain: list[Json] = []
        for sub in subs:
            found = next((o for o in schema if o["name"] == sub and o["type"] in (1, 2)), None)
            if found is None:
                raise ValueError(f"/{root} has no subcommand {sub!r}")
            chain.append(found)
            schema = found.get("options", [])
        built = self._build_options(schema, options, resolved, focused)
        for sub_opt in reversed(chain):
            built = [{"name": sub_opt["name"], "type": sub_opt["type"], "options": built}]
        data: Json = {"id": cmd["id"], "name": root, "type": 1, "options": built}
        if resolved:
            data["resolved"] = resolved
        if in_guild:
            data["guild_id"] = str(self.guild_id)
        return data

    async def run_slash(
        self,
        user: FakeUser,
        name: str,
        options: dict[str, Any] | None = None,
        channel_id: int | None = None,
        attachments: dict[str, FakeFile] | None = None,
    ) -> InteractionHandle:
        """Invoke `/name` (subcommands as "session invite"); user options take FakeUser, attachments FakeFile."""
        data = self._command_data(name, {**(options or {}), **(attachments or {})}, None)
        return await self._send_interaction(2, user, channel_id, data)

    async def autocomplete(
        self, user: FakeUser, name: str, options: dict[str, Any], focused: str, channel_id: int | None = None
    ) -> list[Json]:
        """Ask the bot for autocomplete choices of the focused option; returns [{"name", "value"}, ...]."""
        data = self._command_data(name, options, focused)
        handle = await self._send_interaction(4, user, channel_id, data)
        await handle.response()
        return handle.choices

    def _resolve_message(self, message: FakeMessage | int) -> FakeMessage:
        return self._messages[message] if isinstance(message, int) else message

    async def click(
        self, user: FakeUser, message: FakeMessage | int, custom_id: str, *, channel_id: int | None = None
    ) -> InteractionHandle:
        """Press a button on a message (component interaction, component_type 2).

        channel_id: claim another channel than the message's, as a forged interaction can.
        """
        msg = self._resolve_message(message)
        comp = msg.component(custom_id)
        if comp.disabled:
            raise ValueError(f"button {custom_id!r} is disabled")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._send_interaction(3, user, channel_id, data, msg)

    async def select(
        self, user: FakeUser, message: FakeMessage | int, custom_id: str, values: list[str]
    ) -> InteractionHandle:
        """Choose values in a select menu of a message."""
        msg = self._resolve_message(message)
        comp = msg.component(custom_id)
        data = {"custom_id": custom_id, "component_type": comp.type, "values": list(values)}
        return await self._send_interaction(3, user, None, data, msg)

    async def submit_modal(
        self,
        user: FakeUser,
        channel_id: int | None,
        custom_id: str,
        values: dict[str, str],
        *,
        opened_by: InteractionHandle | None = None,
    ) -> InteractionHandle:
        """Submit a modal (type 5); the shape mirrors the modal the bot opened when `opened_by` is given."""
        rows: list[Json] = []
        shape = opened_by.modal["components"] if opened_by is not None and opened_by.modal else None
        if shape is None:
            rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
        else:
            for top in shape:
                inner = top.get("component") or (top.get("components") or [{}])[0]
                cid = inner.get("custom_id")
                if cid not in values:
                    continue
                item = {"type": inner.get("type", 4), "custom_id": cid, "value": values[cid]}
                rows.append(
                    {"type": 18, "component": item} if top.get("type") == 18 else {"type": 1, "components": [item]}
                )
        message = opened_by.message if opened_by is not None else None
        return await self._send_interaction(5, user, channel_id, {"custom_id": custom_id, "components": rows}, message)

    async def say(
        self, user: FakeUser, channel_id: int | None, content: str, files: list[FakeFile] | None = None
    ) -> FakeMessage:
        """A user posts a message (MESSAGE_CREATE reaches the bot's on_message)."""
        cid = channel_id or self.channel_id
        self.channel_payload(cid)
        msg = FakeMessage(id=self._snow(), channel_id=cid, guild_id=self.guild_id, author=user, content=content)
        msg.attachments = [self._store_attachment(cid, f) for f in files or []]
        await self._add_message(msg)
        return msg
