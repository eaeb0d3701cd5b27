"""Checkpoints, restore and fork through the official SDK (sprites-py)."""

from __future__ import annotations

import httpx
import pytest
from sprites import NotFoundError, SpritesClient


def messages(stream) -> list:
    return [m for m in stream]


def test_checkpoint_list_get_restore(client: SpritesClient, new_name):
    name = new_name("ckpt")
    sprite = client.create_sprite(name)
    sprite.command("sh", "-c", "echo one > ~/f").output()

    msgs = messages(sprite.create_checkpoint("first"))
    assert msgs[0].type == "info" and msgs[0].data == "Creating checkpoint..."
    assert msgs[-1].type == "complete"
    assert msgs[-1].data == "Checkpoint v1 created successfully"
    assert not [m for m in msgs if m.type == "error"]

    ids = [c.id for c in sprite.list_checkpoints()]
    assert ids == ["Current", "v1", "v0"], ids
    v1 = sprite.get_checkpoint("v1")
    assert v1.id == "v1" and v1.comment == "first"
    assert v1.history == ["v0"]
    with pytest.raises(NotFoundError):
        sprite.get_checkpoint("v42")

    sprite.command("sh", "-c", "echo two > ~/f; rm -f ~/.bashrc").output()
    msgs = messages(sprite.restore_checkpoint("v1"))
    assert msgs[0].data == "Restoring from checkpoint v1..."
    assert msgs[-1].type == "complete" and msgs[-1].data == "Restore from v1 complete"
    assert sprite.command("cat", "/home/sprite/f").output() == b"one\n"
    sprite.command("test", "-f", "/home/sprite/.bashrc").run()
    # The latest checkpoints are readable inside the sprite.
    out = sprite.command("cat", "/.sprite/checkpoints/v1/home/sprite/f").output()
    assert out == b"one\n"

    # Restoring an unknown checkpoint is an error, not a silent success.
    with pytest.raises(Exception):
        messages(sprite.restore_checkpoint("v9"))
    client.delete_sprite(name)


def test_delete_checkpoint_and_fork(client: SpritesClient, wispd, new_name):
    name = new_name("ckdel")
    sprite = client.create_sprite(name)
    sprite.command("sh", "-c", "echo base > ~/f").output()
    messages(sprite.create_checkpoint())
    http: httpx.Client = wispd.http()
    url = f"/v1/sprites/{name}/checkpoints"
    # The current checkpoint cannot go; an older one can.
    r = http.delete(f"{url}/v1")
    assert r.status_code == 409 and "error" in r.json()
    assert http.delete(f"{url}/v0").status_code == 204
    assert [c.id for c in sprite.list_checkpoints()] == ["Current", "v1"]

    # Fork (a Wisp extension of create): the new sprite starts from the checkpoint.
    fork = new_name("fork")
    r = http.post("/v1/sprites", json={"name": fork, "from": {"sprite": name}})
    assert r.status_code == 201, r.text
    assert client.sprite(fork).command("cat", "/home/sprite/f").output() == b"base\n"
    client.sprite(fork).command("sh", "-c", "echo forked > ~/f").output()
    assert sprite.command("cat", "/home/sprite/f").output() == b"base\n"
    client.delete_sprite(fork)
    client.delete_sprite(name)
