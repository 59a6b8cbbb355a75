"""Discord limits helpers, the custom_id format and the error translator (no Discord connection)."""

from __future__ import annotations

import logging
import re

import discord
import pytest

from bot import custom_ids as ids, limits
from bot.errors import UNEXPECTED, translate
from orchestrator.errors import InputError, LimitExceeded, NoCapableNode, NotAllowed, PromptRejected

LONG_ID = "f" * 36


def test_truncate_marks_the_cut():
    assert limits.truncate("abc", 3) == "abc"
    assert limits.truncate("abcdef", 4) == "abc…"
    assert len(limits.truncate("x" * 5000, limits.MAX_CONTENT)) == limits.MAX_CONTENT


def test_split_files_never_exceeds_ten():
    groups = limits.split_files(list(range(23)))
    assert [len(g) for g in groups] == [10, 10, 3]
    assert limits.split_files(list(range(5)), max_per_message=50) == [list(range(5))]


def test_thread_name_is_one_line_and_short():
    name = limits.thread_name("a lighthouse\n at dusk " + "x" * 300)
    assert "\n" not in name and len(name) <= limits.THREAD_NAME
    assert limits.thread_name("   ") == "session"


def test_thread_archive_minutes_snaps_to_allowed():
    assert limits.thread_archive_minutes(1000) == 1440
    assert limits.thread_archive_minutes(1) == 60


def test_clamp_embed_fits_every_limit():
    e = discord.Embed(title="t" * 400, description="d" * 5000)
    for _i in range(30):
        e.add_field(name="n" * 300, value="v" * 2000)
    limits.clamp_embed(e)
    assert len(e.title) <= limits.EMBED_TITLE
    assert len(e.description) <= limits.EMBED_DESCRIPTION
    assert len(e.fields) <= limits.EMBED_FIELDS
    assert all(len(f.value) <= limits.EMBED_FIELD_VALUE for f in e.fields)
    assert len(e) <= limits.MAX_EMBED_TOTAL


def test_clamp_embeds_total():
    embeds = [discord.Embed(description="d" * 4000) for _ in range(12)]
    out = limits.clamp_embeds(embeds)
    assert len(out) <= limits.MAX_EMBEDS
    assert sum(len(e) for e in out) <= limits.MAX_EMBED_TOTAL


def test_longest_custom_ids_fit_100_chars_and_match_their_templates():
    cases = [
        (str(ids.VoteId(LONG_ID, LONG_ID, -1)), ids.VOTE_TEMPLATE),
        *[(str(ids.ControlId(a, LONG_ID, LONG_ID)), ids.CONTROL_TEMPLATE) for a in ids.Control],
        (str(ids.PickId(LONG_ID, LONG_ID)), ids.PICK_TEMPLATE),
        *[(str(ids.FinalId(a, LONG_ID, LONG_ID)), ids.FINAL_TEMPLATE) for a in ids.FinalAction],
        *[(str(ids.SuggestionId(a, LONG_ID)), ids.SUGGESTION_TEMPLATE) for a in ids.SuggestionAction],
        (str(ids.BranchSelectId(LONG_ID)), ids.BRANCH_SELECT_TEMPLATE),
        *[(str(ids.ModalId(k, LONG_ID)), ids.MODAL_TEMPLATE) for k in ids.ModalKind],
    ]
    for cid, template in cases:
        assert cid.startswith("imgen:")
        assert len(cid) <= limits.CUSTOM_ID_MAX, cid
        assert re.fullmatch(template, cid), cid


def test_custom_ids_round_trip():
    v = ids.VoteId("s1", "i2", 1)
    assert ids.VoteId.from_match(re.fullmatch(ids.VOTE_TEMPLATE, str(v))) == v
    c = ids.ControlId(ids.Control.CONTINUE, "s1", "st")
    assert ids.ControlId.from_match(re.fullmatch(ids.CONTROL_TEMPLATE, str(c))) == c
    f = ids.FinalId(ids.FinalAction.UPSCALE, "s1", "img")
    assert ids.FinalId.from_match(re.fullmatch(ids.FINAL_TEMPLATE, str(f))) == f
    assert ids.ModalId.parse(str(ids.ModalId(ids.ModalKind.EDIT, "s"))) == ids.ModalId(ids.ModalKind.EDIT, "s")
    assert ids.ModalId.parse("other:thing") is None


def test_templates_do_not_overlap():
    v = str(ids.VoteId("a", "b", 1))
    others = [t for t in ids.ALL_TEMPLATES if t != ids.VOTE_TEMPLATE]
    assert not any(re.fullmatch(t, v) for t in others)


def test_bad_ids_are_refused():
    with pytest.raises(ValueError):
        str(ids.VoteId("has:colon", "x", 1))
    with pytest.raises(ValueError):
        str(ids.PickId("x" * 40, "y"))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NoCapableNode("x", user_message="No GPU can run flux."), "No GPU can run flux."),
        (
            NoCapableNode("ck", user_message="Checkpoint foo.safetensors is missing on every GPU."),
            "foo.safetensors is missing on every GPU",
        ),
        (InputError("p", user_message="The prompt is 2000 characters; the limit is 1500."), "limit is 1500"),
        (InputError("c", user_message="Count must be between 1 and 40."), "between 1 and 40"),
        (NotAllowed("x", user_message="This is a private session: ask <@1> for an invite."), "ask <@1>"),
        (LimitExceeded("x", user_message="You have 3 active sessions."), "3 active sessions"),
    ],
)
def test_known_errors_show_their_user_message(error, expected):
    reply = translate(error)
    assert expected in reply.text
    assert reply.reference is None


def test_comfy_rejection_shows_comfy_words_without_hosts():
    e = PromptRejected("prompt_outputs_failed_validation", "Prompt outputs failed validation")
    assert "203.0.113" not in translate(e).text


def test_unexpected_errors_get_a_reference_and_no_details(caplog):
    caplog.set_level(logging.ERROR, logger="bot.errors")
    err = RuntimeError("connect to 203.0.113.20:8188 failed\nTraceback ...")
    reply = translate(discord.app_commands.CommandInvokeError(type("C", (), {"name": "draft"})(), err))
    assert reply.reference and reply.reference in reply.text
    assert "203.0.113" not in reply.text and "Traceback" not in reply.text
    assert reply.text == UNEXPECTED.format(ref=reply.reference)
    assert any(reply.reference in r.getMessage() for r in caplog.records)


def test_scrub_removes_hosts_urls_and_paths():
    from bot.errors import scrub

    text = scrub(
        "connect to http://203.0.113.20:8188/prompt failed; gpu-box.lan:8188 at /home/me/ComfyUI/models x\nTraceback"
    )
    assert "203.0.113" not in text and "gpu-box.lan" not in text and "/home/me" not in text and "Traceback" not in text
    assert scrub("gpu-a went down") == "gpu-a went down"
    assert scrub("198.51.100.5 refused") == "… refused"
