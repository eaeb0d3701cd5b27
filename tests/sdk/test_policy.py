"""Network policy (Sprites API §3.9, §6.8) through the official SDK (sprites-py).

Only names the policy denies are looked up here: those are refused by the sprite's own
resolver and never reach an upstream, so the test sends nothing off this machine.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sprites import (
    AsyncSpritesClient,
    NetworkPolicy,
    PolicyRule,
    SpriteError,
    SpritesClient,
)
from sprites import policy as policy_api
from sprites.exceptions import APIError, ExitError

# Asks the resolver in /etc/resolv.conf for NAME's A record; prints the rcode.
DNS_QUERY = r"""
import socket, struct, sys
gw = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in sys.argv[1].split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, (gw, 53))
print(s.recv(4096)[3] & 15)
"""
REFUSED = 5


def rules_of(p: NetworkPolicy) -> list:
    return [(r.domain, r.action, r.include) for r in p.rules]


def test_policy_round_trip_and_enforcement(client: SpritesClient, new_name):
    sprite = client.create_sprite(new_name("pol"))
    assert sprite.get_network_policy().rules == []
    inside = json.loads(sprite.command("cat", "/.sprite/policy/network.json").output())
    assert inside == {"rules": []}

    wanted = NetworkPolicy(
        rules=[
            PolicyRule(domain="example.com", action="allow"),
            PolicyRule(domain="*.blocked.example", action="deny"),
            PolicyRule(include="defaults"),
        ]
    )
    # The module-level call insists on exactly 204.
    policy_api.update_network_policy(sprite, wanted)
    got = sprite.get_network_policy()
    assert rules_of(got) == [
        ("example.com", "allow", None),
        ("*.blocked.example", "deny", None),
        (None, None, "defaults"),
    ]
    assert rules_of(policy_api.get_network_policy(sprite)) == rules_of(got)

    # Readable (and only readable) inside.
    inside = json.loads(sprite.command("cat", "/.sprite/policy/network.json").output())
    assert inside == {
        "rules": [
            {"domain": "example.com", "action": "allow"},
            {"domain": "*.blocked.example", "action": "deny"},
            {"include": "defaults"},
        ]
    }
    with pytest.raises(ExitError):
        sprite.command("sh", "-c", "echo x > /.sprite/policy/network.json").run()

    # Denied and unlisted names are refused by the sprite's resolver.
    for name in ["www.blocked.example", "not-listed.invalid"]:
        out = sprite.command("python3", "-c", DNS_QUERY, name).output()
        assert int(out) == REFUSED, (name, out)

    # Invalid documents are refused with 400 and change nothing.
    with pytest.raises(APIError) as e:
        policy_api.update_network_policy(
            sprite, NetworkPolicy(rules=[PolicyRule(domain="example.com")])
        )
    assert e.value.status_code == 400
    with pytest.raises(SpriteError):
        sprite.update_network_policy(NetworkPolicy(rules=[PolicyRule(include="everything")]))
    assert rules_of(sprite.get_network_policy()) == rules_of(got)

    # No rules: unrestricted again.
    sprite.update_network_policy(NetworkPolicy(rules=[]))
    assert sprite.get_network_policy().rules == []
    inside = json.loads(sprite.command("cat", "/.sprite/policy/network.json").output())
    assert inside == {"rules": []}


def test_policy_async_client(wispd, new_name):
    async def run() -> None:
        async with AsyncSpritesClient(token=wispd.token, base_url=wispd.base_url) as client:
            sprite = await client.create_sprite(new_name("apol"))
            await sprite.update_network_policy(
                NetworkPolicy(rules=[PolicyRule(domain="*", action="deny")])
            )
            got = await sprite.get_network_policy()
            assert rules_of(got) == [("*", "deny", None)]
            out = await sprite.command("python3", "-c", DNS_QUERY, "anything.invalid").output()
            assert int(out) == REFUSED

    asyncio.run(run())
