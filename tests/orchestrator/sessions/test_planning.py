"""Pure planning of Draft Grid stages, Concept Builder rounds and Explorer rounds, and the state table."""

from __future__ import annotations

import pytest

from orchestrator.config import DEFAULT_STAGES
from orchestrator.errors import InvalidState
from orchestrator.models import Family, ImageRecord, Mode, TaskKind
from orchestrator.sessions import concept, explorer
from orchestrator.sessions.draft_grid import (
    Parent,
    Render,
    Target,
    plan_first,
    plan_next,
    plan_upscale,
    resolve_recipe,
)
from orchestrator.sessions.models import CONCEPT_FIELDS, SessionSettings, SessionState
from orchestrator.sessions.state import Action, transition

T = Target("sess", "stage", "user")
R = Render("blurry", "ckpt.safetensors")


def image(id_: str, index: int, prompt: str = "a cat", path: str | None = "/x.png") -> ImageRecord:
    return ImageRecord(id_, id_, path, "/x.jpg", "n", 7, 1.0, "ckpt", 512, 512, prompt, "", "sess", "st", None, index)


def test_first_stage_spreads_permutations_and_consecutive_seeds():
    recipe = resolve_recipe(DEFAULT_STAGES[0], SessionSettings(), 2048)
    specs = plan_first(recipe, T, R, prompts=["a red cat", "a blue cat"], count=5, base_seed=100)
    assert [s.index for s in specs] == [1, 2, 3, 4, 5]
    assert [s.params.seed for s in specs] == [100, 101, 102, 103, 104]
    assert [s.params.prompt for s in specs][:3] == ["a red cat", "a blue cat", "a red cat"]
    assert all(s.params.mode is Mode.TXT2IMG and s.task is TaskKind.DRAFT for s in specs)
    assert specs[0].params.negative_prompt == "blurry" and specs[0].params.steps == 10
    assert (specs[0].params.width, specs[0].params.height) == (512, 512)


def test_session_family_aspect_and_steps_reshape_the_recipe():
    ss = SessionSettings(family=Family.SDXL, aspect="16:9", steps=12)
    r = resolve_recipe(DEFAULT_STAGES[0], ss, 2048)
    assert (r.family, r.width, r.height, r.steps) == (Family.SDXL, 1344, 768, 12)


def test_next_stage_is_img2img_from_parents_with_lineage_and_denoise():
    recipe = resolve_recipe(DEFAULT_STAGES[1], SessionSettings(), 2048)
    parents = [Parent(image("a", 3, "a red cat"), 3), Parent(image("b", 7, "a blue cat"), 1)]
    specs = plan_next(recipe, T, R, prompts=["a red cat", "a blue cat"], parents=parents, base_seed=5)
    assert [s.parent_id for s in specs] == ["a", "a", "a", "b"]
    assert [s.index for s in specs] == [1, 2, 3, 4]
    assert all(s.params.mode is Mode.IMG2IMG and s.params.denoise == 0.6 for s in specs)
    assert all(s.params.init_image == "/x.png" for s in specs)
    assert [s.params.prompt for s in specs] == ["a red cat"] * 3 + ["a blue cat"]
    assert specs[0].params.family is Family.SDXL and specs[0].task is TaskKind.STANDARD


def test_a_changed_prompt_reaches_the_children():
    recipe = resolve_recipe(DEFAULT_STAGES[1], SessionSettings(), 2048)
    specs = plan_next(recipe, T, R, prompts=["a cat, golden hour"], parents=[Parent(image("a", 1), 2)], base_seed=1)
    assert {s.params.prompt for s in specs} == {"a cat, golden hour"}


def test_pruned_parent_is_refused_clearly():
    recipe = resolve_recipe(DEFAULT_STAGES[1], SessionSettings(), 2048)
    with pytest.raises(InvalidState, match="pruned"):
        plan_next(recipe, T, R, prompts=["a"], parents=[Parent(image("a", 4, path=None), 1)], base_seed=1)
    with pytest.raises(InvalidState):
        plan_upscale(image("a", 1, path=None), Family.SDXL, T, "4x.pth")


def test_upscale_plan():
    s = plan_upscale(image("a", 1), Family.SDXL, T, "4x-UltraSharp.pth")
    assert s.params.mode is Mode.UPSCALE and s.task is TaskKind.UPSCALE and s.parent_id == "a"
    assert s.params.upscale_model == "4x-UltraSharp.pth" and s.params.init_image == "/x.png"


def test_concept_round_holds_other_fields_and_seed():
    recipe = resolve_recipe(DEFAULT_STAGES[0], SessionSettings(), 2048)
    locked = {"subject": "a lighthouse", "mood": "calm"}
    specs = concept.plan_round(recipe, T, R, field="style", options=["watercolor", "noir"], locked=locked, seed=9)
    assert [s.params.prompt for s in specs] == ["a lighthouse, watercolor, calm", "a lighthouse, noir, calm"]
    assert {s.params.seed for s in specs} == {9}


def test_concept_fields_order_and_validation():
    assert concept.next_field({"subject": "x"}) == "style"
    assert concept.next_field(dict.fromkeys(CONCEPT_FIELDS, "x")) is None
    assert concept.clean_fields({"Style": " ink  wash "}) == {"style": "ink wash"}
    with pytest.raises(Exception, match="field"):
        concept.clean_fields({"colour": "red"})


def test_explorer_round_around_a_pick_mixes_kinds():
    recipe = resolve_recipe(DEFAULT_STAGES[1], SessionSettings(), 1536)
    pick = explorer.Pick("/p.png", "a cat", Family.SDXL, 77, "1:1", "img")
    out = explorer.plan_round(
        recipe, T, R, prompt="a cat", aspect="1:1", pick=pick, count=6, base_seed=10, max_side=1536
    )
    labels = [v.label for v in out]
    assert labels[:3] == ["subtle", "strong", "new seed"]
    assert labels[3].startswith("style: ") and labels[4].startswith("aspect ")
    p = [v.spec.params for v in out]
    assert p[0].mode is Mode.IMG2IMG and p[0].denoise == explorer.SUBTLE_DENOISE and p[0].init_image == "/p.png"
    assert p[1].denoise == explorer.STRONG_DENOISE
    assert p[2].mode is Mode.TXT2IMG
    assert p[4].seed == 77 and (p[4].width, p[4].height) != (1024, 1024)
    assert all(v.spec.parent_id == "img" for v in out)


def test_explorer_from_a_prompt_uses_its_permutations():
    recipe = resolve_recipe(DEFAULT_STAGES[0], SessionSettings(), 2048)
    out = explorer.plan_round(
        recipe, T, R, prompt="a {red,blue} cat", aspect="1:1", pick=None, count=4, base_seed=1, max_side=2048
    )
    assert all(v.spec.params.mode is Mode.TXT2IMG and v.spec.parent_id is None for v in out)
    assert out[1].spec.params.prompt == "a red cat" and out[1].label == "style: a red cat"


def test_state_table():
    S = SessionState
    assert transition(S.VOTING, Action.PLAN) is S.GENERATING
    assert transition(S.GENERATING, Action.STAGE_DONE) is S.VOTING
    assert transition(S.VOTING, Action.FINISH) is S.FINISHED
    assert transition(S.FINISHED, Action.BACK) is S.VOTING
    with pytest.raises(InvalidState) as e:
        transition(S.ENDED, Action.PLAN)
    assert e.value.user_message == "This session has ended."
    with pytest.raises(InvalidState) as e:
        transition(S.GENERATING, Action.FINISH)
    assert e.value.user_message == "Wait for this stage to finish."
