"""FeedbackPipeline through the real ollama.AsyncClient against FakeOllama: success, every failure, vision, health."""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path

import ollama
import pytest
from PIL import Image

from orchestrator.config import LlmSettings
from orchestrator.llm.changes import ImageRef4Llm, RefineRequest, Source
from orchestrator.llm.pipeline import FeedbackPipeline, resolve_host
from orchestrator.models import Family
from tests.fakes.fake_ollama import FakeOllama, Reply

INTERP = "hermes3:8b"
ENG = "phi4:14b"
VISION = "minicpm-v"

GOOD_CHANGES = {
    "keep": [],
    "remove": ["blurry"],
    "add": ["golden hour"],
    "modify": {"a cat": "a dog"},
    "emphasis_up": [],
    "emphasis_down": [],
}
GOOD_ENGINEER = {
    "prompt": "a dog on a sofa, golden hour, sharp focus",
    "negative_prompt": "blurry",
    "rationale": "Swapped the cat for a dog, removed the blur and added golden hour.",
}


def req(**kw) -> RefineRequest:
    base = {
        "prompt": "a cat on a sofa, blurry",
        "feedback": "make it a dog, no blur, warmer light",
        "family": Family.SDXL,
    }
    base.update(kw)
    return RefineRequest(**base)


@pytest.fixture
async def fake():
    async with FakeOllama() as f:
        yield f


def pipeline(fake: FakeOllama, timeout: float = 5.0, **kw) -> FeedbackPipeline:
    return FeedbackPipeline(LlmSettings(host=fake.url, timeout_s=timeout, **kw))


async def test_valid_answers_come_from_ollama_with_schemas_in_format(fake):
    fake.script(INTERP, GOOD_CHANGES)
    fake.script(ENG, GOOD_ENGINEER)
    r = await pipeline(fake).refine(req())
    assert r.source is Source.OLLAMA and r.fallback_reason is None
    assert r.prompt == GOOD_ENGINEER["prompt"]
    assert dict(r.changes.modify) == {"a cat": "a dog"}
    assert "golden hour" in r.diff.added
    for body in fake.requests:
        assert body["stream"] is False
        assert isinstance(body["format"], dict) and body["format"]["type"] == "object"
    assert [b["model"] for b in fake.requests] == [INTERP, ENG]


async def test_malformed_json_twice_falls_back_to_rules(fake):
    fake.script(INTERP, "{not json", "still not json ]")
    r = await pipeline(fake).refine(req())
    assert r.source is Source.RULES
    assert r.fallback_reason is not None and "hermes3:8b answered invalid JSON twice" in r.fallback_reason
    assert r.prompt == "a dog on a sofa, warm golden light, warm color palette"
    assert len(fake.chats(INTERP)) == 2


async def test_schema_violation_is_retried_once_then_accepted(fake):
    fake.script(INTERP, {"keep": "not a list"}, GOOD_CHANGES)
    fake.script(ENG, GOOD_ENGINEER)
    r = await pipeline(fake).refine(req())
    assert r.source is Source.OLLAMA
    assert len(fake.chats(INTERP)) == 2


async def test_schema_violation_twice_falls_back(fake):
    fake.script(ENG, GOOD_ENGINEER)
    fake.script(INTERP, {"add": ["x"]}, {"keep": [], "remove": [], "add": [1], "modify": {}})
    r = await pipeline(fake).refine(req())
    assert r.source is Source.RULES and "invalid JSON twice" in (r.fallback_reason or "")


async def test_engineer_with_empty_prompt_is_invalid(fake):
    fake.script(INTERP, GOOD_CHANGES)
    fake.script(ENG, {"prompt": "", "negative_prompt": "", "rationale": "x"}, {"prompt": " "})
    r = await pipeline(fake).refine(req())
    assert r.source is Source.RULES and "phi4:14b" in (r.fallback_reason or "")


async def test_a_hanging_model_times_out_and_rules_answer(fake):
    fake.script(INTERP, Reply.hanging())
    r = await asyncio.wait_for(pipeline(fake, timeout=0.3).refine(req()), 10)
    assert r.source is Source.RULES
    assert "did not answer" in (r.fallback_reason or "") or "in time" in (r.fallback_reason or "")


async def test_http_500_falls_back(fake):
    fake.script(INTERP, Reply.http(500, "CUDA out of memory"))
    r = await pipeline(fake).refine(req())
    assert r.source is Source.RULES
    assert "HTTP 500" in (r.fallback_reason or "") and "CUDA out of memory" in (r.fallback_reason or "")


async def test_missing_model_falls_back_and_names_it(fake):
    fake.models = ("hermes3:8b",)
    fake.script(INTERP, GOOD_CHANGES)
    r = await pipeline(fake).refine(req())
    assert r.source is Source.RULES
    assert "phi4:14b is not installed" in (r.fallback_reason or "")


async def test_ollama_not_running_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = FeedbackPipeline(LlmSettings(host=f"127.0.0.1:{port}", timeout_s=5))
    r = await asyncio.wait_for(p.refine(req()), 4)
    assert r.source is Source.RULES
    assert r.fallback_reason == f"Ollama not reachable at http://127.0.0.1:{port}"
    h = await p.health()
    assert not h.reachable and "not reachable" in (h.error or "")


async def test_disabled_means_rules_without_a_fallback_reason(fake):
    r = await pipeline(fake, enabled=False).refine(req())
    assert r.source is Source.RULES and r.fallback_reason is None
    assert fake.requests == []


async def test_engineer_breaking_keep_or_remove_is_overruled_by_the_rules_engineer(fake):
    fake.script(INTERP, {**GOOD_CHANGES, "keep": ["sofa"], "modify": {}})
    fake.script(ENG, {"prompt": "a cat on a bed, blurry, golden hour", "negative_prompt": "", "rationale": "x"})
    r = await pipeline(fake).refine(req())
    assert r.source is Source.RULES
    assert "phi4:14b dropped the kept phrase 'sofa'" in (r.fallback_reason or "")
    assert "sofa" in r.prompt and "blurry" not in r.prompt and "golden hour" in r.prompt


async def test_engineer_leaving_a_removed_token_is_overruled(fake):
    fake.script(INTERP, GOOD_CHANGES)
    fake.script(ENG, {"prompt": "a dog on a sofa, blurry", "negative_prompt": "", "rationale": "x"})
    r = await pipeline(fake).refine(req())
    assert r.source is Source.RULES and "left the removed 'blurry'" in (r.fallback_reason or "")


async def test_flux_answers_lose_weight_syntax(fake):
    fake.script(INTERP, GOOD_CHANGES)
    fake.script(ENG, {**GOOD_ENGINEER, "prompt": "A dog on a sofa at (golden hour:1.3)."})
    r = await pipeline(fake).refine(req(family=Family.FLUX))
    assert r.prompt == "A dog on a sofa at golden hour."


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (900, 600), colour).save(path)
    return path


async def test_vision_stage_gets_downscaled_base64_images_and_feeds_negatives(fake, tmp_path):
    sel = [ImageRef4Llm(1, _png(tmp_path / "1.png", (200, 120, 40)), "a cat", 11)]
    rej = [
        ImageRef4Llm(2, _png(tmp_path / "2.png", (20, 20, 200)), "a cat", 22),
        ImageRef4Llm(3, _png(tmp_path / "3.png", (20, 200, 20)), "a cat", 33),
    ]
    fake.script(INTERP, GOOD_CHANGES)
    fake.script(
        VISION,
        {"selected_traits": ["warm palette"], "rejected_traits": ["cold blue cast"], "key_differences": "warmth"},
    )
    fake.script(ENG, GOOD_ENGINEER)
    r = await pipeline(fake, vision_max_side=64).refine(
        req(selected=tuple(sel), rejected=tuple(rej), stage_images=(*sel, *rej))
    )
    assert r.source is Source.OLLAMA
    [vision_call] = fake.chats(VISION)
    images = vision_call["messages"][0]["images"]
    assert len(images) == 3
    import io

    for b64 in images:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert im.format == "JPEG" and max(im.size) <= 64
    assert "cold blue cast" in r.negative_prompt
    eng_text = fake.chats(ENG)[0]["messages"][1]["content"]
    assert "cold blue cast" in eng_text


async def test_vision_is_skipped_without_rejected_images(fake, tmp_path):
    sel = (ImageRef4Llm(1, _png(tmp_path / "1.png", (1, 2, 3)), "a cat", 1),)
    fake.script(INTERP, GOOD_CHANGES)
    fake.script(ENG, GOOD_ENGINEER)
    r = await pipeline(fake).refine(req(selected=sel, stage_images=sel))
    assert r.source is Source.OLLAMA and fake.chats(VISION) == []


async def test_like_number_borrows_tokens_and_seed_on_both_paths(fake):
    imgs = tuple(ImageRef4Llm(n, None, f"a cat on a sofa, blurry, style {n}", 100 + n) for n in (1, 2, 3))
    r = await pipeline(fake, enabled=False).refine(req(feedback="more like #3", stage_images=imgs))
    assert r.seed == 103 and "style 3" in r.prompt and r.changes.borrow_from == (3,)
    fake.script(INTERP, {**GOOD_CHANGES, "borrow_from": [3, 99]})
    fake.script(ENG, GOOD_ENGINEER)
    r = await pipeline(fake).refine(req(feedback="more like #3", stage_images=imgs))
    assert r.source is Source.OLLAMA and r.seed == 103 and r.changes.borrow_from == (3,)
    assert "style 3" in fake.chats(ENG)[0]["messages"][1]["content"]


async def test_intent_reaches_the_interpreter(fake):
    from orchestrator.llm.changes import Changes, IntentEntry

    entry = IntentEntry("no people", Changes(remove=("people",)), "a", "b", "", "people", Source.RULES, "", 1.0)
    fake.script(INTERP, GOOD_CHANGES)
    fake.script(ENG, GOOD_ENGINEER)
    await pipeline(fake).refine(req(intent=(entry,)))
    assert "no people" in fake.chats(INTERP)[0]["messages"][1]["content"]


async def test_health_reports_version_and_missing_models(fake):
    fake.models = ("hermes3:8b", "minicpm-v:latest")
    h = await pipeline(fake).health()
    assert h.reachable and h.version == "0.6.3-fake"
    assert h.missing_models == ("phi4:14b",)


async def test_concept_options_from_ollama_and_from_vocabulary(fake):
    fake.script(INTERP, {"options": ["neon glow", "candlelight", "moonlight"]})
    opts, src = await pipeline(fake).concept_options("lighting", "a fox", {"style": "oil painting"}, 3)
    assert src is Source.OLLAMA and opts == ("neon glow", "candlelight", "moonlight")
    assert "oil painting" in fake.chats(INTERP)[0]["messages"][0]["content"]
    fake.script(INTERP, {"options": ["one"]}, {"options": ["one"]})
    opts, src = await pipeline(fake).concept_options("lighting", "a fox", {}, 3)
    assert src is Source.RULES and len(set(opts)) == 3
    with pytest.raises(ValueError):
        await pipeline(fake).concept_options("smell", "a fox", {}, 3)


async def test_injected_client_is_used_and_not_closed(fake):
    client = ollama.AsyncClient(host=fake.url)
    fake.script(INTERP, GOOD_CHANGES)
    fake.script(ENG, GOOD_ENGINEER)
    p = FeedbackPipeline(LlmSettings(timeout_s=5), client=client)
    assert (await p.refine(req())).source is Source.OLLAMA
    assert (await client.list()).models
    await client.close()


def test_resolve_host_follows_ollama_conventions(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_host(None) == "http://127.0.0.1:11434"
    assert resolve_host("gpu-box") == "http://gpu-box:11434"
    assert resolve_host("https://x.example:8443/") == "https://x.example:8443"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:9999")
    assert resolve_host(None) == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("engineer_prompt", "reason"),
    [
        ("a dog on a sofa, golden hour, the dog should be fluffy", "pasted request words (should)"),
        ("a dog on a sofa, golden hour, photo, pencil sketch", "left two medium tags"),
        ("a sofa, golden hour", "dropped the subject"),
    ],
)
async def test_engineer_answers_are_judged_on_the_prompt_model(fake, engineer_prompt, reason):
    changes = {**GOOD_CHANGES, "modify": {}}
    prompt = "a dog on a sofa, blurry, photo"
    fake.script(INTERP, changes)
    fake.script(ENG, {"prompt": engineer_prompt, "negative_prompt": "blurry", "rationale": "x"})
    r = await pipeline(fake).refine(req(prompt=prompt, feedback="golden hour, no blur"))
    assert r.source is Source.RULES and reason in (r.fallback_reason or "")
    assert r.prompt == "a dog on a sofa, photo, golden hour"


async def test_engineer_pasting_the_request_into_the_negative_is_overruled(fake):
    # the interpreter read "make the gnome wear a red hat" badly; the engineer keeps the request's verb out
    fake.script(INTERP, {**GOOD_CHANGES, "remove": [], "add": ["a red hat"], "modify": {}})
    fake.script(ENG, {"prompt": "a gnome in a garden, a red hat", "negative_prompt": "gnome wear", "rationale": "x"})
    r = await pipeline(fake).refine(
        req(prompt="a gnome in a garden", feedback="make the gnome wear a red hat", negative_prompt="")
    )
    assert r.source is Source.RULES
    assert "pasted request words (wear) into the negative prompt" in (r.fallback_reason or "")
    assert "wear" not in r.negative_prompt
