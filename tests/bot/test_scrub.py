"""The one scrubber: the error texts ComfyUI, the Ollama client and our LLM stages produce leave nothing internal."""

from __future__ import annotations

import re

import pytest
from ollama._client import CONNECTION_ERROR_MESSAGE

from bot import render
from bot.errors import scrub, translate
from orchestrator.errors import InputError
from orchestrator.llm.changes import Changes, PromptDiff, RefineResult, Source

SECRET_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA.Gh1jK2.abcdefghijklmnopqrstuvwxyz0123456"

#: error texts as ComfyUI (comfyui-protocol.md: validation errors, execution_error, /view, sockets), the ollama
#: client, httpx and our own LLM stages (orchestrator/llm/stages.py) word them, with internal details filled in
ERROR_TEXTS = [
    "Cannot execute because node FooNode does not exist.: Node ID '#4'",
    "Prompt outputs failed validation",
    "Value not in list: ckpt_name: 'sd_xl_base_1.0.safetensors' not in ['/opt/ComfyUI/models/checkpoints/a.ckpt']",
    "Required input is missing: images",
    "Exception when validating node: [Errno 2] No such file or directory: '/home/gpu/ComfyUI/input/up (1).png'",
    "Value 99999 bigger than max of 16384: width",
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.99 GiB total capacity) at /srv/comfy/comfy/ops.py",
    'Error while deserializing header: HeaderTooLarge, file "D:\\ComfyUI\\models\\checkpoints\\x.safetensors"',
    'Traceback (most recent call last):\n  File "/opt/ComfyUI/execution.py", line 151, in recursive_execute',
    "Invalid image file: \\\\nas01\\share\\comfy\\input\\x.png",
    "execution_interrupted on gpu-box.lan:8188",
    "400 Bad Request for url 'http://198.51.100.20:8188/view?filename=../../etc/passwd'",
    "All connection attempts failed while connecting to ws://203.0.113.7:8188/ws?clientId=abc",
    "[Errno 111] Connect call failed ('127.0.0.1', 8188)",
    "[Errno 99] Cannot assign requested address ('::1', 8188, 0, 0)",
    "Server disconnected without sending a response. (comfy-node:8188)",
    "getaddrinfo failed for localhost port 11434",
    CONNECTION_ERROR_MESSAGE,
    'model "hermes3:8b" not found, try pulling it first',
    "Ollama not reachable at http://127.0.0.1:9",
    "Ollama at http://[fe80::1ff:fe23:4567:890a]:11434 did not answer in time",
    "Ollama not reachable at http://ollama.internal:11434 (ConnectError)",
    "Ollama answered HTTP 401 for phi4:14b: Authorization: Bearer sk-abcdef0123456789 is invalid",
    f"login failed with token={SECRET_TOKEN}",
    f"Improper token has been passed: {SECRET_TOKEN}",
    "cannot read image x.png: [Errno 13] Permission denied: ~/vibes/data/images/_batch/x.png",
]

#: nothing of these may survive
INTERNAL = re.compile(
    r"\d{1,3}(\.\d{1,3}){3}|:\d{2,5}\b|localhost|ollama\.internal|gpu-box|comfy-node|fe80|::1|"
    r"/opt/|/home/|/srv/|/etc/|ComfyUI\\|\\\\nas01|~/|D:\\|sk-abc|MTIzNDU2|port 11434",
    re.I,
)


@pytest.mark.parametrize("text", ERROR_TEXTS)
def test_scrub_leaves_nothing_internal(text):
    """Every host, address, port, path (quoted or not) and token is gone; the sentence stays readable."""
    out = scrub(text, 400, first_line=False)
    assert not INTERNAL.search(out), out
    assert out and out[0] == text.strip()[0], "the start of the sentence is kept"


def test_scrub_keeps_what_a_member_needs():
    """Model names, numbers, sizes and our own commands stay as they are."""
    text = "Value 99999 bigger than max of 16384: width; use `/session png 3` or --ar 16:9, hermes3:8b at 12:30:45"
    assert scrub(text, 400) == text


def test_error_translator_scrubs_user_messages():
    """An ImGenError whose message quotes a node's words is scrubbed on its way to the member."""
    err = InputError("x", user_message="The GPU said: No such file '/opt/ComfyUI/input/a.png' on 192.0.2.3:8188")
    text = translate(err).text
    assert not INTERNAL.search(text)
    assert text.startswith("The GPU said: No such file")


def test_llm_fallback_reason_is_scrubbed_in_the_suggestion():
    """The rules path's fallback reason (with Ollama's address) reaches the embed without the address."""
    result = RefineResult(
        prompt="a fox",
        negative_prompt="",
        rationale="rules",
        changes=Changes(),
        diff=PromptDiff(),
        source=Source.RULES,
        fallback_reason="Ollama not reachable at http://127.0.0.1:9",
    )
    embed = render.suggestion_embed(result, by="bob")
    answered = next(f.value for f in embed.fields if f.name == "Answered by")
    assert "127.0.0.1" not in answered and ":9" not in answered
    assert "Ollama not reachable" in answered
