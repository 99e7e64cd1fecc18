"""The verify-email link answers HTML to people and JSON to programs that ask for it."""

from __future__ import annotations

import pytest

from intake.verify_email import prefers_json


@pytest.mark.parametrize(("accept", "json"), [
    (None, False),
    ("", False),
    ("*/*", False),
    ("application/json", True),
    ("Application/JSON; charset=utf-8", True),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
    ("application/json, text/html;q=0.5", True),
    ("text/html;q=0.5, application/json;q=0.9", True),
    ("application/json;q=0.4, */*;q=0.5", False),  # HTML through */* at 0.5 beats 0.4
    ("application/*", True),
    ("text/*, application/json;q=0.1", False),
    ("application/json;q=0", False),
    ("application/json;q=bogus", False),
])
def test_json_only_when_it_is_the_best_match(accept: str | None, json: bool) -> None:
    assert prefers_json(accept) is json
