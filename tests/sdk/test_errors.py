"""Bad input through raw HTTP (httpx, which the SDK uses): status codes and JSON error bodies."""

from __future__ import annotations

import pytest


def assert_json_error(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return body


@pytest.mark.parametrize(
    "name",
    ["Bad_Name", "UPPER", "has space", "-leading", "trailing-", "a" * 64, "dots.in.name", ""],
)
def test_invalid_name_is_400(wispd, name):
    with wispd.http() as c:
        assert_json_error(c.post("/v1/sprites", json={"name": name}), 400)


def test_missing_name_is_400(wispd):
    with wispd.http() as c:
        assert_json_error(c.post("/v1/sprites", json={}), 400)


def test_body_not_json_is_400(wispd):
    with wispd.http() as c:
        r = c.post("/v1/sprites", content=b"{not json", headers={"Content-Type": "application/json"})
        assert_json_error(r, 400)


def test_duplicate_name_is_409(wispd, new_name):
    name = new_name("dup")
    with wispd.http() as c:
        first = c.post("/v1/sprites", json={"name": name})
        assert first.status_code == 201, first.text
        assert first.json()["name"] == name
        assert_json_error(c.post("/v1/sprites", json={"name": name}), 409)
        assert c.delete(f"/v1/sprites/{name}").status_code == 204


def test_no_token_is_401(wispd):
    with wispd.http(token="") as c:
        assert_json_error(c.get("/v1/sprites"), 401)


def test_unknown_sprite_is_404_json(wispd, new_name):
    with wispd.http() as c:
        assert_json_error(c.get(f"/v1/sprites/{new_name('nope')}"), 404)


def test_exec_without_command_is_400(wispd, new_name):
    # A WebSocket upgrade with neither cmd nor id must fail as a plain HTTP response.
    name = new_name("nocmd")
    with wispd.http() as c:
        assert c.post("/v1/sprites", json={"name": name}).status_code == 201
        r = c.get(
            f"/v1/sprites/{name}/exec",
            params={"stdin": "true"},
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert_json_error(r, 400)
        assert c.delete(f"/v1/sprites/{name}").status_code == 204
