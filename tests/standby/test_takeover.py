"""Active/standby for real: two `vibes bot` processes, `vibes sim`, the fake Discord and PostgreSQL.

`make failover` kills the active instance at five moments of a stage; the suite runs the first moment (before any
image of the stage is back: the recovery re-attaches every prompt) and the split-brain cut, which fit its budget.
"""

from __future__ import annotations

import pytest

from tests.failover.scenarios import split_brain, takeover

pytestmark = pytest.mark.timeout(300)


async def test_the_standby_takes_over_a_stage_when_the_active_instance_is_killed(pg_url, tmp_path):
    out = await takeover(tmp_path, pg_url, "before any image")
    print(f"takeover: the standby answered {out.takeover_s:.2f} s after the kill")
    assert not out.problems, out.problems
    assert out.images_posted == 4


async def test_an_active_instance_cut_from_the_database_stops_before_the_standby_acts(pg_url, tmp_path):
    out = await split_brain(tmp_path, pg_url)
    print(f"split brain: the standby answered {out.takeover_s:.2f} s after the cut")
    assert not out.problems, out.problems
    assert out.images_posted == 4
