"""Commands through the SDK's control connection (`control_mode=True`, sprites-api.md §3.3):
a pool of persistent WebSockets on `/v1/sprites/{name}/control`, each running one command
after another.

That the SDK really spoke control (it falls back to plain exec sockets silently when the
upgrade fails) is checked two ways: wispd logs every control socket it opens, and the
sprite's control pool in the SDK holds connections.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import time
import uuid

import pytest
from sprites import NotFoundError, SpritesClient


@pytest.fixture(scope="module")
def control_client(wispd):
    c = SpritesClient(token=wispd.token, base_url=wispd.base_url, timeout=60.0, control_mode=True)
    yield c
    c.close()


@pytest.fixture(scope="module")
def ctl_sprite(control_client, created):
    # The conftest's prefix, so that teardown sweeps it up whatever happens.
    name = created.add(f"sdkt-ctl-{uuid.uuid4().hex[:10]}")
    sprite = control_client.create_sprite(name)
    yield sprite
    try:
        control_client.delete_sprite(name)
    except NotFoundError:
        pass


def control_sockets_opened(wispd, name: str) -> int:
    """How many control sockets wispd has opened for the sprite so far (from its log)."""
    text = wispd.log_path.read_text(errors="replace")
    return sum(
        1 for line in text.splitlines() if "control socket opened" in line and name in line
    )


def test_sequential_commands_share_one_socket(ctl_sprite, wispd):
    before = control_sockets_opened(wispd, ctl_sprite.name)
    for i in range(6):
        r = ctl_sprite.run("sh", "-c", f"echo out{i}; echo err{i} >&2; exit {i}",
                           capture_output=True)
        assert (r.returncode, r.stdout, r.stderr) == (i, f"out{i}\n".encode(), f"err{i}\n".encode())
    assert ctl_sprite.command("echo", "hello").output() == b"hello\n"
    r = ctl_sprite.run("sh", "-c", 'echo "$WISP_CTL"; pwd', env={"WISP_CTL": "a b=c"}, cwd="/tmp",
                       capture_output=True)
    assert r.stdout == b"a b=c\n/tmp\n"
    after = control_sockets_opened(wispd, ctl_sprite.name)
    # The pool may have had a socket from an earlier test; sequential commands add at most one.
    assert after >= 1, "the SDK did not open a control socket (did it fall back to exec?)"
    assert after - before <= 1, (before, after)
    assert ctl_sprite.has_control_connection()


def test_stdin_and_eof(ctl_sprite):
    data = bytes(range(256)) * 64 + os.urandom(100_000)
    assert ctl_sprite.command("cat", stdin=io.BytesIO(data), timeout=60).output() == data
    assert ctl_sprite.command("wc", "-c", stdin=io.BytesIO(b"")).output().strip() == b"0"
    # Without stdin the SDK sends EOF at once: cat must not hang.
    assert ctl_sprite.command("cat", timeout=30).output() == b""


def test_tty_command(ctl_sprite):
    r = ctl_sprite.run("sh", "-c", "tty; stty size; exit 4", tty=True, tty_rows=33, tty_cols=101,
                       capture_output=True)
    assert r.returncode == 4
    out = r.stdout.decode()
    assert "/dev/pts/" in out, out
    assert "33 101" in out, out


def test_unknown_command_is_127(ctl_sprite):
    r = ctl_sprite.run("wisp-no-such-command", capture_output=True)
    assert r.returncode == 127
    assert r.stderr


def test_concurrent_commands(ctl_sprite, wispd):
    before = control_sockets_opened(wispd, ctl_sprite.name)

    def one(i: int):
        r = ctl_sprite.run("sh", "-c", f"sleep 0.5; echo {i}", capture_output=True)
        return i, r.returncode, r.stdout

    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(one, range(12)))
    elapsed = time.monotonic() - t
    assert results == [(i, 0, f"{i}\n".encode()) for i in range(12)]
    # Twelve half-second commands, six at a time: about a second, not six.
    assert elapsed < 4.5, elapsed
    # Six at once need six sockets (the pool may hold one already), reused for the rest.
    opened = control_sockets_opened(wispd, ctl_sprite.name) - before
    assert 1 <= opened <= 6, opened
    # Sequential commands afterwards reuse the pool: no new socket.
    mid = control_sockets_opened(wispd, ctl_sprite.name)
    for i in range(3):
        assert ctl_sprite.command("echo", str(i)).output() == f"{i}\n".encode()
    assert control_sockets_opened(wispd, ctl_sprite.name) == mid
