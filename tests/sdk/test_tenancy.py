"""Tenancy through the official SDK: per-org limits as the SDK's APIError (429), and
attenuated tokens used as ordinary SDK tokens.

The organization, its token and its limits are set up over raw HTTP with the admin token
(organization management is a Wisp extension the SDK has no calls for). Attenuated tokens are
computed here from the documented chain (wisp_api::attenuation), independently of the Rust
code, so the format is checked too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
from sprites import SpriteError, SpritesClient
from sprites.exceptions import APIError
from sprites.exceptions import parse_api_error

from conftest import Wispd, unique_name


def attenuate(token: str, caveats: list) -> str:
    """Narrows a full `org/org-id/token-id/secret` token (HMAC-SHA256 chain)."""
    slug, _org_id, token_id, secret = token.split("/")
    key = hmac.new(
        hashlib.sha256(secret.encode()).digest(),
        f"wisp-attenuation-v1:{token_id}".encode(),
        hashlib.sha256,
    ).digest()
    for c in caveats:
        canonical = json.dumps(c, separators=(",", ":")).encode()
        key = hmac.new(key, canonical, hashlib.sha256).digest()
    blob = json.dumps(caveats, separators=(",", ":")).encode()
    enc = base64.urlsafe_b64encode(blob).decode().rstrip("=")
    return f"wisp1.{slug}.{token_id}.{enc}.{key.hex()}"


class Org:
    def __init__(self, wispd: Wispd) -> None:
        self.wispd = wispd
        self.slug = f"sdkt-{uuid.uuid4().hex[:8]}"
        with wispd.http() as c:
            r = c.post("/v1/organizations", json={"slug": self.slug})
            assert r.status_code == 201, r.text
            r = c.post(f"/v1/organizations/{self.slug}/tokens", json={"description": "sdk"})
            assert r.status_code == 201, r.text
            self.token = r.json()["token"]
        self.sprites: list = []

    def limits(self, **fields) -> None:
        with self.wispd.http() as c:
            r = c.put(f"/v1/organizations/{self.slug}", json=fields)
            assert r.status_code == 200, r.text

    def client(self, token: str | None = None) -> SpritesClient:
        return SpritesClient(
            token=token or self.token, base_url=self.wispd.base_url, timeout=60.0
        )

    def cleanup(self) -> None:
        with self.wispd.http(self.token) as c:
            for name in self.sprites:
                c.delete(f"/v1/sprites/{name}")


@pytest.fixture
def org(wispd):
    o = Org(wispd)
    yield o
    o.cleanup()


def test_running_limit_on_wake_is_concurrent_limit_api_error(org, wispd):
    client = org.client()
    name = unique_name("lim")
    org.sprites.append(name)
    sprite = client.create_sprite(name)
    with wispd.http(org.token) as c:
        r = c.post(f"/v1/sprites/{name}/sleep", params={"mode": "cold"})
        assert r.status_code == 204, r.text
    org.limits(running_limit=0)

    # Waking the cold sprite for an exec: the SDK's WebSocket path parses the 429.
    with pytest.raises(APIError) as e:
        sprite.command("true").run()
    err = e.value
    assert err.status_code == 429
    assert err.is_rate_limit_error()
    assert err.is_concurrent_limit_exceeded()
    assert not err.is_creation_rate_limited()
    assert err.limit == 0
    assert err.current_count == 0
    assert err.window_seconds is not None
    assert err.retry_after_seconds and err.retry_after_seconds > 0
    assert err.retry_after_header == err.retry_after_seconds
    assert err.get_retry_after_seconds() == err.retry_after_seconds
    assert err.args[0], "a human message"

    # A create is refused the same way (the SDK's create raises its generic error; the
    # body still parses into the same APIError).
    with pytest.raises(SpriteError) as e:
        client.create_sprite(unique_name("lim"))
    assert "429" in str(e.value)
    with wispd.http(org.token) as c:
        r = c.post("/v1/sprites", json={"name": unique_name("lim")})
    parsed = parse_api_error(r.status_code, r.content, dict(r.headers))
    assert parsed.is_concurrent_limit_exceeded()

    # Lifted: the sprite wakes.
    org.limits(running_limit="unlimited")
    assert sprite.command("echo", "awake").output() == b"awake\n"
    client.close()


def test_create_rate_is_creation_rate_limited(org, wispd):
    org.limits(create_rate_limit=0, create_rate_window_seconds=120)
    with wispd.http(org.token) as c:
        r = c.post("/v1/sprites", json={"name": unique_name("rate")})
    assert r.status_code == 429, r.text
    err = parse_api_error(r.status_code, r.content, dict(r.headers))
    assert isinstance(err, APIError)
    assert err.is_creation_rate_limited()
    assert not err.is_concurrent_limit_exceeded()
    assert (err.limit, err.window_seconds, err.current_count) == (0, 120, 0)
    assert 0 < err.retry_after_seconds <= 120
    assert err.retry_after_header == err.retry_after_seconds
    assert err.rate_limit_limit == 0 and err.rate_limit_remaining == 0
    assert err.rate_limit_reset and err.rate_limit_reset > time.time()
    client = org.client()
    with pytest.raises(SpriteError) as e:
        client.create_sprite(unique_name("rate"))
    assert "429" in str(e.value) and "sprite_creation_rate_limited" in str(e.value)
    client.close()


def test_attenuated_tokens_are_sdk_tokens(org, wispd):
    full = org.client()
    name = unique_name("att")
    other = unique_name("att")
    org.sprites += [name, other]
    full.create_sprite(name)
    full.create_sprite(other)

    ro = org.client(attenuate(org.token, [{"sprite": name}, {"ops": ["read"]}]))
    assert ro.get_sprite(name).name == name
    listed = [s.name for s in ro.list_sprites().sprites]
    assert listed == [name]
    with pytest.raises(APIError) as e:
        ro.sprite(name).command("true").run()
    assert e.value.status_code == 403
    with pytest.raises(SpriteError):
        ro.get_sprite(other)
    with pytest.raises(SpriteError):
        ro.create_sprite(unique_name("att"))

    xo = org.client(attenuate(org.token, [{"sprite_prefix": name}, {"ops": ["exec"]}]))
    assert xo.sprite(name).command("echo", "hi").output() == b"hi\n"

    expired = org.client(attenuate(org.token, [{"expires": int(time.time()) - 1}]))
    with pytest.raises(SpriteError):
        expired.get_sprite(name)
    for c in (full, ro, xo, expired):
        c.close()
