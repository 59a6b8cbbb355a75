"""Every test of this package ends with the check that the bot's messages pinged nobody it did not mean to."""

from __future__ import annotations

import pytest

from tests.bot.hostile.arena import assert_pings_only


@pytest.fixture(autouse=True)
def _nobody_pinged_unless_meant(fake_discord, request):
    """After every action of this package: the bot's messages notified nobody (but those a test marks as meant)."""
    yield
    marker = request.node.get_closest_marker("meant_pings")
    meant = frozenset(marker.args[0](fake_discord)) if marker else frozenset()
    assert_pings_only(fake_discord, meant)
