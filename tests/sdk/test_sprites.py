"""Sprite lifecycle through the official SDK: create, get, list, delete."""

from __future__ import annotations

import pytest
from sprites import AuthenticationError, ListOptions, NotFoundError, SpritesClient


def test_lifecycle(client: SpritesClient, new_name):
    name = new_name("life")

    created = client.create_sprite(name)
    assert created.name == name
    assert isinstance(created.id, str) and created.id, created.id
    assert created.status in ("cold", "warm", "running"), created.status

    got = client.get_sprite(name)
    assert got.name == name
    assert got.id == created.id
    assert got.created_at is not None

    listed = client.list_sprites()
    assert name in [s.name for s in listed.sprites]

    by_prefix = client.list_sprites(ListOptions(prefix=name))
    assert [s.name for s in by_prefix.sprites] == [name]
    assert by_prefix.has_more is False

    assert name in [s.name for s in client.list_all_sprites(prefix=name)]

    # The sprite works before it goes away.
    assert client.sprite(name).command("echo", "alive").output() == b"alive\n"

    client.delete_sprite(name)
    with pytest.raises(NotFoundError):
        client.get_sprite(name)
    assert name not in [s.name for s in client.list_sprites(ListOptions(prefix=name)).sprites]


def test_get_unknown_sprite_is_not_found(client: SpritesClient, new_name):
    with pytest.raises(NotFoundError):
        client.get_sprite(new_name("missing"))


def test_delete_unknown_sprite_is_not_found(client: SpritesClient, new_name):
    with pytest.raises(NotFoundError):
        client.delete_sprite(new_name("missing"))


def test_wrong_token_is_refused(wispd):
    with SpritesClient(token="not-a-valid-token", base_url=wispd.base_url) as bad:
        with pytest.raises(AuthenticationError):
            bad.list_sprites()


def test_sprites_survive_in_list_while_others_are_created(client: SpritesClient, new_name):
    a, b = new_name("pair"), new_name("pair")
    client.create_sprite(a)
    client.create_sprite(b)
    try:
        names = {s.name for s in client.list_sprites().sprites}
        assert {a, b} <= names
    finally:
        client.delete_sprite(a)
        client.delete_sprite(b)
