"""Commands in a sprite through the official SDK's exec WebSocket."""

from __future__ import annotations

import concurrent.futures
import io
import os
import re

import pytest
from sprites import ExecError, SpriteError, SpritesClient


def test_echo_stdout_exact(shared_sprite):
    assert shared_sprite.command("echo", "hello").output() == b"hello\n"
    r = shared_sprite.run("echo", "hello", capture_output=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"hello\n", b"")


def test_stderr_is_separate(shared_sprite):
    r = shared_sprite.run("sh", "-c", "echo out; echo err >&2", capture_output=True)
    assert r.returncode == 0
    assert r.stdout == b"out\n"
    assert r.stderr == b"err\n"


def test_exit_code(shared_sprite):
    r = shared_sprite.run("sh", "-c", "exit 42", capture_output=True)
    assert r.returncode == 42
    with pytest.raises(ExecError) as e:
        shared_sprite.command("sh", "-c", "echo partial; exit 42").run()
    assert e.value.exit_code() == 42


def test_unknown_command_exits_127(shared_sprite):
    r = shared_sprite.run("wisp-no-such-command", capture_output=True)
    assert r.returncode == 127
    assert r.stderr, "expected a message on stderr"


def test_stdin_binary_bytes_exact(shared_sprite):
    data = bytes(range(256)) * 4 + b"\x00\xff\r\n\x1b[0m no newline at end"
    out = shared_sprite.command("cat", stdin=io.BytesIO(data)).output()
    assert out == data


def test_stdin_one_mebibyte(shared_sprite):
    data = os.urandom(1 << 20)
    out = shared_sprite.command("cat", stdin=io.BytesIO(data), timeout=120).output()
    assert len(out) == len(data)
    assert out == data


def test_stdin_empty_gives_eof(shared_sprite):
    assert shared_sprite.command("wc", "-c", stdin=io.BytesIO(b"")).output().strip() == b"0"
    # Without stdin the SDK sends EOF at once: cat must not hang.
    assert shared_sprite.command("cat", timeout=30).output() == b""


def test_env_and_cwd(shared_sprite):
    r = shared_sprite.run(
        "sh", "-c", 'echo "$WISP_TEST_VAR"; pwd', env={"WISP_TEST_VAR": "a b=c"}, cwd="/tmp",
        capture_output=True,
    )
    assert r.stdout == b"a b=c\n/tmp\n"


def test_default_user_home_and_path(shared_sprite):
    r = shared_sprite.run("sh", "-c", 'id -un; pwd; echo "$HOME"; command -v python3',
                          capture_output=True)
    assert r.returncode == 0, r.stderr
    user, cwd, home, py = r.stdout.decode().splitlines()
    assert user == "sprite"
    assert cwd == "/home/sprite"
    assert home == "/home/sprite"
    assert py.endswith("/python3")


def test_sudo_without_password(shared_sprite):
    r = shared_sprite.run("sudo", "-n", "id", "-u", capture_output=True)
    assert (r.returncode, r.stdout) == (0, b"0\n"), r.stderr


def test_files_persist_between_commands(shared_sprite):
    shared_sprite.run("sh", "-c", "echo kept > ~/persist.txt", check=True)
    assert shared_sprite.command("cat", "/home/sprite/persist.txt").output() == b"kept\n"


def test_tty_is_a_pty(shared_sprite):
    r = shared_sprite.run("tty", tty=True, capture_output=True)
    assert r.returncode == 0
    assert re.fullmatch(rb"/dev/pts/\d+\r?\n", r.stdout), r.stdout


def test_non_tty_is_not_a_tty(shared_sprite):
    r = shared_sprite.run("tty", capture_output=True)
    assert r.returncode == 1
    assert r.stdout.strip() == b"not a tty"


def test_tty_default_size(shared_sprite):
    r = shared_sprite.run("stty", "size", tty=True, capture_output=True)
    assert r.returncode == 0
    assert r.stdout.strip() == b"24 80"


def test_tty_custom_size(shared_sprite):
    r = shared_sprite.run("stty", "size", tty=True, tty_rows=40, tty_cols=132, capture_output=True)
    assert r.stdout.strip() == b"40 132"


def test_tty_exit_code(shared_sprite):
    r = shared_sprite.run("sh", "-c", "exit 3", tty=True, capture_output=True)
    assert r.returncode == 3


def test_tty_stdin_reaches_the_program(shared_sprite):
    # A TTY echoes input and turns \n into \r\n; `head -n1` exits after the first line.
    out = shared_sprite.command(
        "head", "-n1", tty=True, stdin=io.BytesIO(b"typed line\n"), timeout=30
    ).output()
    assert b"typed line" in out


def test_ten_concurrent_commands(shared_sprite):
    def one(i: int):
        r = shared_sprite.run(
            "sh", "-c", f"echo start-{i}; sleep 0.3; echo end-{i} >&2; exit {i}",
            capture_output=True, timeout=60,
        )
        return i, r

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(one, range(10)))
    for i, r in results:
        assert r.returncode == i
        assert r.stdout == f"start-{i}\n".encode()
        assert r.stderr == f"end-{i}\n".encode()


def test_large_output(shared_sprite):
    r = shared_sprite.run("head", "-c", str(3 << 20), "/dev/zero", capture_output=True, timeout=120)
    assert r.returncode == 0
    assert r.stdout == bytes(3 << 20)


def test_exec_in_unknown_sprite_fails(client: SpritesClient, new_name):
    with pytest.raises(SpriteError) as e:
        client.sprite(new_name("missing")).run("true")
    assert getattr(e.value, "status_code", None) == 404, repr(e.value)
