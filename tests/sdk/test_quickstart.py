"""The quick start (scripts/install.sh) works on this host, and twice in a row.

Runs the real script with the freshly built binaries (WISP_SKIP_BUILD=1), into a temporary
prefix and data dir, on a free port, without systemd or apt, then stops the daemon it started.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

from conftest import IMAGE_DIR, REPO, WISP_BIN, WISP_KEEPER_BIN, WISPD_BIN, mounts_under, require_executable

INSTALL = REPO / "scripts" / "install.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(900)
def test_install_script_quick_start():
    for path, what in ((WISPD_BIN, "wispd"), (WISP_KEEPER_BIN, "wisp-keeper"), (WISP_BIN, "wisp")):
        require_executable(path, what)
    bin_dir = WISPD_BIN.parent
    if WISP_KEEPER_BIN.parent != bin_dir or WISP_BIN.parent != bin_dir:
        pytest.fail("install.sh takes one WISP_BIN_DIR: keep wispd, wisp-keeper and wisp together")

    root = pathlib.Path(tempfile.mkdtemp(prefix="wisp-quickstart-", dir="/var/tmp"))
    data_dir = root / "data"
    port = free_port()
    env = dict(
        os.environ,
        WISP_SKIP_BUILD="1",
        WISP_BIN_DIR=str(bin_dir),
        WISP_PREFIX=str(root / "prefix"),
        WISP_DATA_DIR=str(data_dir),
        WISP_LISTEN=f"127.0.0.1:{port}",
        WISP_IMAGE_DIR=str(IMAGE_DIR),
        WISP_NO_SYSTEMD="1",
        WISP_NO_APT="1",
        WISP_HELLO="hello",
    )
    env.pop("WISP_API_URL", None)
    env.pop("WISP_TOKEN", None)
    try:
        for attempt in (1, 2):
            p = subprocess.run(
                ["bash", str(INSTALL)], env=env, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=600,
            )
            assert p.returncode == 0, f"run {attempt}:\n{p.stdout}\n{p.stderr}"
            assert "wisp is ready" in p.stdout, p.stdout
            for b in ("wispd", "wisp-keeper", "wisp"):
                assert (root / "prefix" / "bin" / b).is_file()
        # The second run found everything in place.
        assert "already running" in p.stdout, p.stdout
        assert "exists" in p.stdout, p.stdout
        run_readme_quick_start(root, data_dir, port)
    finally:
        stop_quickstart_daemon(data_dir, port)
        # Its storage pool and pooled network namespaces stay mounted after wispd exits, as
        # they must across restarts; the test's daemon is gone, so they go too.
        for point in sorted(mounts_under(root), key=lambda p: -p.count("/")):
            subprocess.run(["umount", "-l", point], check=False)
        if not mounts_under(root):
            shutil.rmtree(root, ignore_errors=True)


def run_readme_quick_start(root: pathlib.Path, data_dir: pathlib.Path, port: int) -> None:
    """The README's quick-start commands, with the installed CLI, as a user would type them."""
    wisp = str(root / "prefix" / "bin" / "wisp")
    work = root / "project"
    work.mkdir()
    env = dict(os.environ, WISP_API_URL=f"http://127.0.0.1:{port}", WISP_DATA_DIR=str(data_dir))
    for k in ("WISP_TOKEN", "WISP_SPRITE"):
        env.pop(k, None)

    def wisp_cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([wisp, *args], env=env, cwd=work, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        if ok:
            assert p.returncode == 0, f"wisp {' '.join(args)}: {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    assert wisp_cli("create", "my-sprite").stdout.strip() == "my-sprite"
    try:
        uname = wisp_cli("exec", "-s", "my-sprite", "--", "uname", "-a").stdout
        assert uname.startswith("Linux my-sprite "), uname
        wisp_cli("use", "my-sprite")
        assert (work / ".wisp-sprite").is_file()
        wisp_cli("exec", "--", "sh", "-c", "echo kept > ~/note")
        assert wisp_cli("exec", "--", "cat", "/home/sprite/note").stdout == "kept\n"
        assert wisp_cli("exec", "--", "sh", "-c", "exit 7", ok=False).returncode == 7
        listed = wisp_cli("list").stdout
        assert "my-sprite" in listed and "hello" in listed, listed
    finally:
        wisp_cli("destroy", "--force", "my-sprite")
    assert "my-sprite" not in wisp_cli("list").stdout


def stop_quickstart_daemon(data_dir: pathlib.Path, port: int) -> None:
    token_file = data_dir / "admin-token"
    if token_file.exists():
        token = token_file.read_text().strip()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as c:
                c.delete("/v1/sprites/hello")
        except httpx.HTTPError:
            pass
    pid_file = data_dir / "wispd.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(150):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
