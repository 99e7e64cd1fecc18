"""Fixtures for the workers: the door (to queue registrations for real), registrants."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from tests.intake.door_helpers import DoorUnderTest, running_door


@pytest.fixture
async def door_under_test(test_settings: Settings, redis_client: object) -> AsyncIterator[
    DoorUnderTest
]:
    """A door wired to the test Redis (flushed by redis_client)."""
    async with running_door(test_settings) as door:
        yield door


@pytest.fixture
def registrants() -> RegistrantFactory:
    """Valid made-up registrants."""
    return RegistrantFactory()
