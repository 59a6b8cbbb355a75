"""Pure rendering: domain objects -> message content, embeds and gallery layout, always within Discord's limits."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import discord

from bot import limits
from bot.errors import scrub
from bot.tracker import ProgressView
from orchestrator.sessions.models import StageKind

if TYPE_CHECKING:
    from orchestrator.llm.changes import RefineResult
    from orchestrator.models import InstanceInfo
    from orchestrator.service import FarmHealth, NodeStatus
    from orchestrator.sessions.models import ImageInfo, Session, StageImage, StageView

#: images per gallery message (Discord: 10 attachments) and toggles per button row (Discord: 5 buttons)
GALLERY_PAGE = limits.MAX_ATTACHMENTS
PER_ROW = limits.MAX_BUTTONS_PER_ROW
BAR_WIDTH = 20
COLOR = discord.Colour(0x5865F2)
COLOR_DONE = discord.Colour(0x57F287)
COLOR_WARN = discord.Colour(0xFEE75C)

FLOW_LABELS = {"draft_grid": "Draft Grid", "draft": "Draft Grid", "concept": "Concept Builder", "explorer": "Explorer"}


def flow_label(flow: object) -> str:
    """Human name of a session flow."""
    value = str(getattr(flow, "value", flow))
    return FLOW_LABELS.get(value, value.replace("_", " ").title())


def mention(user_id: str) -> str:
    """A user mention from a string id (it notifies nobody: the bot allows no mentions unless a message opts in)."""
    return f"<@{user_id}>"


def echo(text: str) -> str:
    """User text shown back in a message or embed: mentions defused, markdown (masked links too) shown as typed."""
    # allowed_mentions already stops the ping; escaping also keeps "@everyone" and "<@&role>" from rendering as
    # mentions, and "[free nitro](https://…)" from rendering as a link with a lying label.
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


_MASKED_LINK = re.compile(r"\[([^\]]*)\]\(")


def defuse(text: str) -> str:
    """Names users chose (checkpoints, LoRAs) shown as typed: mentions and masked links defused, `_` left alone."""
    return discord.utils.escape_mentions(_MASKED_LINK.sub(r"[\1]\\(", text))


# --------------------------------------------------------------------------- progress


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """A text bar like `██████░░░░` for done/total."""
    if total <= 0:
        return "░" * width
    filled = min(width, round(width * done / total))
    return "█" * filled + "░" * (width - filled)


def duration(seconds: float) -> str:
    """Short human duration: 45 s, 3 min 5 s, 1 h 2 min."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {(s % 3600) // 60} min"


#: shown on a voting stage's progress message while its next stage runs on idle GPUs (nothing of it is posted)
SPECULATING_TEXT = "preparing the next stage from the current votes"


def progress_content(view: ProgressView) -> str:
    """The live status message of one stage."""
    head = f"**{view.name}** · stage {view.index + 1} · {view.total} image{'s' if view.total != 1 else ''}"
    line = f"`{progress_bar(view.done, view.total)}` {view.done}/{view.total}"
    if view.failed:
        line += f" · {view.failed} failed"
        if view.last_error:
            line += f" (last: {view.last_error})"
    lines = [head, line]
    if view.nodes:
        parts = []
        for n in view.nodes:
            part = f"{n.node_id} {n.done}✓"
            if n.running:
                part += f" {n.running}⟳"
                if n.step is not None:
                    part += f" {n.step[0]}/{n.step[1]}"
            parts.append(part)
        lines.append(" · ".join(parts))
    if view.finished:
        lines.append("Done." if not view.failed else f"Done with {view.failed} failed.")
        if view.speculating:
            lines.append(f"⏩ {SPECULATING_TEXT}")
    elif view.eta_s is None:
        lines.append("ETA: measuring…")
    else:
        lines.append(f"ETA ~{duration(view.eta_s)}")
    lines += [f"↪ {note}" for note in view.notes]
    return limits.content("\n".join(lines))


# --------------------------------------------------------------------------- session header / status


#: settings shown in their own words (the rules have their own line)
_OWN_TEXT = ("loras", "quorum", "deadline_s")


def _settings_text(session: Session) -> str:
    settings = getattr(session, "settings", None)
    parts: list[str] = []
    if settings is not None and dataclasses.is_dataclass(settings):
        for f in dataclasses.fields(settings):
            value = getattr(settings, f.name)
            if f.name in _OWN_TEXT or value is None or value == () or value == "" or value is False:
                continue
            if isinstance(value, Enum):
                value = value.value
            parts.append(f"{f.name.replace('_', ' ')}: {value}")
        loras = getattr(settings, "loras", ())
        if loras:
            parts.append("LoRA: " + ", ".join(lora_text(lo.name, lo.strength_model) for lo in loras))
    return ", ".join(parts) or "defaults"


def lora_text(name: str, weight: float) -> str:
    """`name` at full weight, else `name:0.8`."""
    return name if weight == 1.0 else f"{name}:{weight:g}"


def rules_text(session: Session) -> str:
    """The session's voting rules in words: quorum, deadline, or Continue by hand."""
    settings = getattr(session, "settings", None)
    quorum = getattr(settings, "quorum", None)
    deadline_s = getattr(settings, "deadline_s", None)
    parts = []
    if quorum:
        parts.append(f"continues by itself once {quorum} {'person has' if quorum == 1 else 'people have'} voted")
    if deadline_s:
        parts.append(f"continues by itself {duration(deadline_s)} after each stage is ready")
    return "; or ".join(parts) if parts else "none: someone presses Continue"


def header_embed(session: Session) -> discord.Embed:
    """The reply to a session command: prompt, flow, settings, owner; its thread holds the rest."""
    e = discord.Embed(
        title=limits.truncate(session.prompt or flow_label(session.flow), limits.EMBED_TITLE), colour=COLOR
    )
    e.add_field(name="Flow", value=flow_label(session.flow))
    e.add_field(name="Owner", value=mention(session.owner_id))
    e.add_field(name="Visibility", value=str(getattr(session.visibility, "value", session.visibility)))
    if session.negative_prompt:
        e.add_field(name="Negative", value=echo(session.negative_prompt), inline=False)
    e.add_field(name="Settings", value=defuse(_settings_text(session)), inline=False)
    settings = getattr(session, "settings", None)
    if getattr(settings, "quorum", None) or getattr(settings, "deadline_s", None):
        e.add_field(name="Rules", value=rules_text(session), inline=False)
    e.set_footer(text=f"session {session.id}")
    return limits.clamp_embed(e)


def status_embed(session: Session, stage: StageView | None) -> discord.Embed:
    """`/session status`: where the session is and who takes part."""
    e = discord.Embed(title=limits.truncate(f"Session · {flow_label(session.flow)}", limits.EMBED_TITLE), colour=COLOR)
    e.description = limits.truncate(echo(session.prompt), 1000)
    e.add_field(name="State", value=str(getattr(session.state, "value", session.state)))
    e.add_field(name="Visibility", value=str(getattr(session.visibility, "value", session.visibility)))
    e.add_field(name="Owner", value=mention(session.owner_id))
    e.add_field(name="Settings", value=defuse(_settings_text(session)), inline=False)
    e.add_field(name="Rules", value=rules_text(session), inline=False)
    if stage is not None:
        status = str(getattr(stage.status, "value", stage.status))
        e.add_field(
            name="Stage",
            value=f"{stage.name} ({status}): {stage.delivered}/{stage.total} delivered"
            + (f", {stage.failed} failed" if stage.failed else ""),
            inline=False,
        )
        if stage.images:
            e.add_field(name="Votes", value=vote_summary(stage) or "no votes yet", inline=False)
    people = getattr(session, "participants", {}) or {}
    if people:
        e.add_field(
            name="Participants",
            value=", ".join(f"{mention(u)} ({getattr(r, 'value', r)})" for u, r in people.items()),
            inline=False,
        )
    fields = concept_fields_text(session)
    if fields:
        e.add_field(name="Concept", value=fields, inline=False)
    return limits.clamp_embed(e)


def vote_summary(stage: StageView) -> str:
    """Who voted what: `#3 +2 (✓ @a @b)`, best first."""
    lines = []
    for img in sorted(stage.images, key=lambda i: (-i.tally, i.number)):
        if not img.votes:
            continue
        ups = " ".join(mention(u) for u, v in img.votes.items() if v > 0)
        downs = " ".join(mention(u) for u, v in img.votes.items() if v < 0)
        parts = [f"#{img.number} {img.tally:+d}"]
        if ups:
            parts.append(f"✓ {ups}")
        if downs:
            parts.append(f"✗ {downs}")
        lines.append(" ".join(parts))
    return limits.truncate("\n".join(lines), limits.EMBED_FIELD_VALUE)


def concept_fields_text(session: Session) -> str:
    """Locked Concept Builder fields and the one being explored (empty for other flows)."""
    concept = getattr(session, "concept", None)
    if concept is None:
        return ""
    locked = getattr(concept, "locked", {}) or {}
    current = getattr(concept, "current_field", None)
    lines = [f"🔒 **{echo(k)}**: {echo(v)}" for k, v in locked.items()]
    if current:
        lines.append(f"➡ now choosing **{current}** (pick an image, or reply with your own value)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- galleries


@dataclass(frozen=True, slots=True)
class GalleryPage:
    """One gallery message: up to 10 consecutive images of a stage."""

    page: int
    pages: int
    images: tuple[StageImage, ...]

    @property
    def first(self) -> int:
        return self.images[0].number if self.images else 0

    @property
    def last(self) -> int:
        return self.images[-1].number if self.images else 0


def gallery_pages(stage: StageView) -> list[GalleryPage]:
    """The stage's images in number order, 10 per message."""
    ordered = sorted(stage.images, key=lambda i: i.number)
    groups = limits.chunks(ordered, GALLERY_PAGE) if ordered else []
    return [GalleryPage(page=i, pages=len(groups), images=tuple(g)) for i, g in enumerate(groups)]


def page_of(number: int) -> int:
    """Which gallery message holds image `number` (1-based numbers, 0-based pages)."""
    return (number - 1) // GALLERY_PAGE


def vote_counts(img: StageImage) -> tuple[int, int]:
    """(selects, rejects) on an image."""
    ups = sum(1 for v in img.votes.values() if v > 0)
    downs = sum(1 for v in img.votes.values() if v < 0)
    return ups, downs


def select_label(img: StageImage) -> str:
    """`✓3` or `✓3 · 2` with the number of selects."""
    ups, _ = vote_counts(img)
    return limits.label(f"✓{img.number}" + (f" · {ups}" if ups else ""))


def reject_label(img: StageImage) -> str:
    """`✗3` or `✗3 · 1` with the number of rejects."""
    _, downs = vote_counts(img)
    return limits.label(f"✗{img.number}" + (f" · {downs}" if downs else ""))


def gallery_content(stage: StageView, page: GalleryPage, *, session: Session | None = None) -> str:
    """The text above a gallery message's images (Concept Builder: locked fields and each number's option)."""
    span = f"#{page.first}-#{page.last}" if page.first != page.last else f"#{page.first}"
    head = f"**{stage.name}** · {span} of {stage.total}"
    if page.pages > 1:
        head += f" · part {page.page + 1}/{page.pages}"
    picking = session is not None and str(getattr(session.flow, "value", session.flow)) != "draft_grid"
    lines = [head]
    if session is not None and page.page == 0:
        fields = concept_fields_text(session)
        if fields:
            lines.append(fields)
    if stage.options:
        shown = {im.number for im in page.images}
        lines += [f"**{n}** {echo(opt)}" for n, opt in enumerate(stage.options, start=1) if n in shown]
    lines.append("Pick the one to keep going from." if picking else "✓ select · ✗ reject (press again to withdraw).")
    if page.page == page.pages - 1 and stage.failed:
        lines.append(f"{stage.failed} image{'s' if stage.failed != 1 else ''} could not be made.")
    return limits.content("\n".join(lines))


def image_filename(number: int, ext: str = "jpg") -> str:
    """Numbered attachment names keep the gallery order visible."""
    return f"{number:02d}.{ext}"


# --------------------------------------------------------------------------- feedback


def suggestion_embed(result: RefineResult, *, by: str) -> discord.Embed:
    """A suggested prompt: the diff, the new prompt, why, and which path answered."""
    e = discord.Embed(title="Suggested prompt", colour=COLOR_WARN)
    e.description = limits.truncate(f"```diff\n{_diff_lines(result)}\n```", limits.EMBED_DESCRIPTION)
    e.add_field(name="New prompt", value=echo(result.prompt) or "(empty)", inline=False)
    if result.negative_prompt:
        e.add_field(name="Negative", value=echo(result.negative_prompt), inline=False)
    if result.rationale:
        e.add_field(name="Why", value=echo(result.rationale), inline=False)
    source = str(getattr(result.source, "value", result.source))
    answered = "the language model" if source == "ollama" else "the built-in rules"
    if result.fallback_reason:
        # The reason can carry Ollama's address or a path: only its scrubbed words leave the process.
        answered += f" (fallback: {scrub(result.fallback_reason, 200)})"
    e.add_field(name="Answered by", value=answered, inline=False)
    e.set_footer(text=f"asked by {by} · Use applies it to the next stage; reply “undo” to revert")
    return limits.clamp_embed(e)


def _diff_lines(result: RefineResult) -> str:
    d = result.diff
    lines = [f"+ {t}" for t in d.added] + [f"- {t}" for t in d.removed]
    lines += [f"+ (negative) {t}" for t in d.negative_added] + [f"- (negative) {t}" for t in d.negative_removed]
    return "\n".join(lines) if lines else "  no change"


def applied_text(session: Session, *, by: str, edited: bool) -> str:
    """After Use / Edit: the prompt the next stage will use."""
    how = "edited and applied" if edited else "applied"
    return limits.content(f"✅ {mention(by)} {how} the suggestion. Next stage prompt:\n> {echo(session.prompt)}")


def undo_text(session: Session) -> str:
    """After “undo”."""
    return limits.content(f"↩ Reverted. Prompt is now:\n> {echo(session.prompt)}")


# --------------------------------------------------------------------------- final image / info


def final_content(stage: StageView, img: StageImage) -> str:
    """The text above a finished image."""
    what = "Upscaled" if stage.kind is StageKind.UPSCALE else "Final image"
    return limits.content(f"**{what}** · #{img.number} · seed {img.image.seed} · {img.image.width}x{img.image.height}")


def info_embed(info: ImageInfo) -> discord.Embed:
    """Info: prompt, seed, node, time, lineage."""
    e = discord.Embed(title="Image info", colour=COLOR)
    e.description = limits.truncate(echo(info.prompt), 1500)
    if info.negative_prompt:
        e.add_field(name="Negative", value=echo(info.negative_prompt), inline=False)
    e.add_field(name="Seed", value=str(info.seed))
    e.add_field(name="GPU", value=info.node_id or "?")
    e.add_field(name="Time", value=f"{info.seconds:.1f} s")
    e.add_field(name="Size", value=f"{info.width}x{info.height}")
    if info.checkpoint:
        e.add_field(name="Checkpoint", value=info.checkpoint)
    chain = getattr(info, "lineage", ()) or ()
    if chain:
        e.add_field(name="Lineage", value=lineage_text(chain), inline=False)
    return limits.clamp_embed(e)


def lineage_text(chain: Sequence[object]) -> str:
    """Ancestors, oldest first: `drafts #3 → refined #2 → final #1`."""
    parts = []
    for link in chain:
        stage = getattr(link, "stage_name", None) or getattr(link, "stage", None) or ""
        number = getattr(link, "number", None) or getattr(link, "index", None)
        seed = getattr(link, "seed", None)
        text = f"{stage} #{number}" if number else str(getattr(link, "id", link))[:8]
        if seed is not None:
            text += f" (seed {seed})"
        parts.append(text.strip())
    return limits.truncate(" → ".join(parts), limits.EMBED_FIELD_VALUE)


# --------------------------------------------------------------------------- farm


def gpus_embed(
    nodes: Sequence[NodeStatus], health: FarmHealth | None = None, instances: Sequence[InstanceInfo] = ()
) -> discord.Embed:
    """`/gpus`: per node health, tier, loaded checkpoint, queue, in flight, measured speed, recent failures."""
    healthy = sum(1 for n in nodes if n.healthy)
    e = discord.Embed(title=f"GPU farm · {healthy}/{len(nodes)} healthy", colour=COLOR_DONE if healthy else COLOR_WARN)
    if not nodes:
        e.description = "No GPU nodes are configured."
    for n in nodes[: limits.EMBED_FIELDS]:
        speed = ", ".join(f"{fam} {sps:.2f} s/step" for fam, sps in n.seconds_per_step.items())
        lines = [
            f"{'🟢 up' if n.healthy else '🔴 down'} · tier {n.tier}",
            f"loaded: {n.loaded_checkpoint or 'nothing'}"
            + (f" · kept: {n.kept_checkpoint}" if n.kept_checkpoint else ""),
            f"queue {n.queue_length} · in flight {n.in_flight} · done {n.completed}",
            f"speed ({'measured' if n.measured else 'estimated'}): {speed or '—'}",
        ]
        if n.recent_failures:
            lines.append(f"recent failures: {n.recent_failures}")
        if n.listener_restarts:
            lines.append(f"listener restarts: {n.listener_restarts}")
        if n.dropped_frames:
            lines.append(f"malformed messages dropped: {n.dropped_frames}")
        e.add_field(name=limits.truncate(f"{n.name} ({n.id})", limits.EMBED_FIELD_NAME), value="\n".join(lines))
    if instances:
        text = instances_text(instances) + (f"\n\n{e.description}" if e.description else "")
        e.description = limits.truncate(text, limits.EMBED_DESCRIPTION)
    if health is not None:
        e.set_footer(
            text=f"engine: {health.task_restarts} task restarts · {health.reconciler_heals} reconciler heals · "
            f"{health.backups_started} backup copies ({health.backups_won} won) · {health.db_retries} DB retries · "
            f"speculative GPU-s: {health.speculative_useful_s:.0f} useful, {health.speculative_wasted_s:.0f} wasted"
        )
    return limits.clamp_embed(e)


def instances_text(instances: Sequence[InstanceInfo]) -> str:
    """The bot instances sharing the database: the one holding the lock acts, the others stand by."""
    lines = []
    for i in instances:
        what = "🟢 active" if i.holds_lock else f"⏸️ {i.role.value}"
        lines.append(f"{what}: `{i.id}` on {i.host} (pid {i.pid}, since {discord.utils.format_dt(i.started, 'R')})")
    return "\n".join(lines)


def ended_text(reason: str) -> str:
    """Posted in the thread when a session ends (or finishes)."""
    if reason == "finished":
        return "Session finished. Upscale, Variations, Branch and Info still work on the images above."
    reason = scrub(reason, 300)
    return limits.content(f"Session ended{f': {reason}' if reason else ''}.")


def deadline_missed_text(reason: str) -> str:
    """Posted in the thread when a stage's deadline passed but the session could not continue."""
    return limits.content(f"⏰ The deadline passed, but the session cannot continue yet: {scrub(reason, 300)}")


def field_set_text(value: str, *, by: str) -> str:
    """After a participant typed a Concept Builder value."""
    return limits.content(f"🔒 {mention(by)} set the field to “{echo(value)}”; the next round is on its way.")


def no_images_text(stage: StageView) -> str:
    """A stage whose every image failed."""
    return limits.content(
        f"**{stage.name}**: none of the {stage.total} images could be made. Regenerate to try again, or End."
    )


def post_failed_text(what: str, why: str) -> str:
    """Posted in the thread after the last retry of a post Discord kept refusing."""
    return limits.content(
        f"⚠ Could not post {what}: {why}. The images are kept; `/session png N` sends any of them to you, "
        "and the bot tries again when it restarts."
    )


def waiting_for_model_text(by: str) -> str:
    """Shown while a refine waits for its turn with the language model; edited into the suggestion after."""
    return limits.content(f"⏳ Feedback from {echo(by)}: waiting for the model…")
