"""bench/feedback_quality on the shipped case sets: enough varied cases, checks that catch bad output, and the rules
holding their accuracy on the development and the held-out part."""

from __future__ import annotations

from bench.feedback_quality import DEFAULT_CASES, HELDOUT_CASES, Case, check, format_markdown, load_all, run_quality


def test_case_sets_are_large_and_split():
    cases = load_all()
    held = [c for c in cases if c.part == "held-out"]
    assert len(cases) >= 300
    assert len(held) >= 100
    # the two parts are different lines, not one set scored twice
    assert not {(c.prompt, c.feedback) for c in held} & {(c.prompt, c.feedback) for c in cases if c not in held}


def _case(**kw: object) -> Case:
    base = {"prompt": "a cat on a sofa", "feedback": "x", "has": (), "lacks": (), "neg": (), "part": "development"}
    base.update(kw)
    return Case(**base)  # type: ignore[arg-type]


def test_checks_fail_what_a_reader_would_reject():
    c = _case(has=("green cat",), lacks=("sofa",), neg=("blurry",))
    assert check(c, "a green cat", "blurry") == ()
    failed = check(c, "a cat on a sofa, green", "")
    assert "missing 'green cat'" in failed and "still has 'sofa'" in failed and "negative lacks 'blurry'" in failed
    assert any("leaked 'should'" in f for f in check(_case(), "a cat on a sofa, cat should be smaller", ""))
    assert any("orphaned" in f for f in check(_case(), "a child flying a on a beach", ""))
    assert any("two medium tags" in f for f in check(_case(prompt="a cat, photo"), "a cat, photo, pencil sketch", ""))
    assert any("duplicate" in f for f in check(_case(), "a cat on a sofa, a cat on a sofa", ""))
    assert any("out of range" in f for f in check(_case(), "a cat on a sofa, (fog:1.9)", ""))
    # the negative prompt is held to the same rule: only content an operation produced, never the request's words
    wear = _case(feedback="make the cat wear a crown")
    assert "global: leaked 'wear' into the negative" in check(wear, "a cat wearing a crown on a sofa", "cat wear")
    assert check(wear, "a cat wearing a crown on a sofa", "blurry") == ()
    assert "global: leaked 'please' into the negative" in check(_case(feedback="no dog please"), "a cat", "dog, please")


def test_rules_accuracy_on_both_parts():
    report = run_quality(DEFAULT_CASES, heldout_path=HELDOUT_CASES)
    [rules] = report.paths
    assert rules.accuracy("held-out") >= 0.9
    assert rules.accuracy("development") >= 0.95
    assert rules.global_failures() == 0
    md = format_markdown(report)
    assert "| rules |" in md and "held-out" in md and "--host" in md


async def test_the_same_cases_run_through_ollama_when_it_answers():
    from bench.feedback_quality import ollama_path
    from tests.fakes.fake_ollama import FakeOllama, Reply

    def answer(body: dict) -> Reply:
        user = body["messages"][-1]["content"]
        if body["model"] == "hermes3:8b":
            remove = ["sofa"] if "no sofa" in user else []
            return Reply.json({"keep": [], "remove": remove, "add": [], "modify": {}, "emphasis_up": [],
                               "emphasis_down": []})  # fmt: skip
        # an engineer that changes nothing, and pastes the request in when something is to be removed
        prompt = user.split("Current prompt: ", 1)[1].split("\n", 1)[0]
        out = f"{prompt}, should be without sofa" if "sofa" in user.split("Structured changes:", 1)[1] else prompt
        return Reply.json({"prompt": out, "negative_prompt": "", "rationale": "ok"})

    cases = (
        _case(feedback="golden hour", has=("golden hour",)),
        _case(feedback="no sofa", has=("cat",), lacks=("sofa",), part="held-out"),
    )
    async with FakeOllama(handler=answer) as fake:
        path = await ollama_path(cases, fake.url)
    assert path.source.startswith("ollama phi4:14b at")
    # the unchanged prompt fails its check; the pasted request is overruled by the invariant check (rules answer)
    assert path.accuracy("development") == 0.0
    assert path.accuracy("held-out") == 1.0 and path.fallbacks == 1


async def test_an_unreachable_ollama_is_reported_not_scored():
    import socket

    from bench.feedback_quality import ollama_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = await ollama_path((_case(),), f"http://127.0.0.1:{port}")
    assert path.outcomes == () and "not reachable" in path.source
