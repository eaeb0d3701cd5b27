"""Fixtures that run a real wispd and point the official Sprites SDK (sprites-py) at it.

Environment (scripts/test-all sets all of them):
  WISPD_BIN        the wispd binary            (default: <repo>/target/debug/wispd)
  WISP_KEEPER_BIN  the wisp-keeper binary      (default: next to wispd)
  WISP_BIN         the wisp CLI                (default: next to wispd)
  WISP_IMAGE_DIR   shared base-image cache     (default: /var/tmp/wisp-test-images)
  WISP_TEST_TMP    parent of the daemon's temporary data dir (default: /var/tmp)
  WISP_KEEP_TEST_DATA=1  keep the data dir (and its wispd.log) after the run

A missing binary or a daemon that does not come up is an error, never a skip.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from typing import Iterator, List, Optional

import httpx
import pytest
from sprites import NotFoundError, SpritesClient

REPO = pathlib.Path(__file__).resolve().parents[2]
# Every sprite these tests create starts with this, so teardown can sweep them up.
NAME_PREFIX = "sdkt-"

# Lets the report hook attach the daemon log to failures.
_CURRENT_LOG: Optional[pathlib.Path] = None


def bin_path(env: str, default: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(os.environ.get(env) or default)


WISPD_BIN = bin_path("WISPD_BIN", REPO / "target" / "debug" / "wispd")
WISP_KEEPER_BIN = bin_path("WISP_KEEPER_BIN", WISPD_BIN.parent / "wisp-keeper")
WISP_BIN = bin_path("WISP_BIN", WISPD_BIN.parent / "wisp")
IMAGE_DIR = pathlib.Path(os.environ.get("WISP_IMAGE_DIR") or "/var/tmp/wisp-test-images")


def unique_name(tag: str = "") -> str:
    """A fresh sprite name: lowercase, starts with NAME_PREFIX, well under 63 chars."""
    tag = f"{tag}-" if tag else ""
    return f"{NAME_PREFIX}{tag}{uuid.uuid4().hex[:10]}"


def require_executable(path: pathlib.Path, what: str) -> None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{what} not found at {path}: build with `cargo build --workspace` "
            f"or set the environment variable (see tests/sdk/conftest.py)",
            pytrace=False,
        )


def mounts_under(path: pathlib.Path) -> List[str]:
    prefix = str(path).rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split(" ")[4] for line in f]
    except OSError:
        return []
    return [p for p in points if p == prefix[:-1] or p.startswith(prefix)]


def log_tail(path: Optional[pathlib.Path], lines: int = 60) -> str:
    if path is None or not path.exists():
        return "(no wispd log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


@dataclasses.dataclass
class Wispd:
    """A running daemon."""

    base_url: str
    token: str
    data_dir: pathlib.Path
    log_path: pathlib.Path
    proc: subprocess.Popen

    def http(self, token: Optional[str] = None) -> httpx.Client:
        """A raw HTTP client for the API (bearer token unless token="")."""
        tok = self.token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120.0)


def start_wispd(data_dir: pathlib.Path, timeout: float = 240.0) -> Wispd:
    """Starts wispd on a free loopback port and waits for its address and admin token."""
    require_executable(WISPD_BIN, "wispd")
    require_executable(WISP_KEEPER_BIN, "wisp-keeper")
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "wispd.log"
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                str(WISPD_BIN),
                "--data-dir", str(data_dir),
                "--listen", "127.0.0.1:0",
                "--image-dir", str(IMAGE_DIR),
                "--keeper-bin", str(WISP_KEEPER_BIN),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    addr_file = data_dir / "wispd.addr"
    token_file = data_dir / "admin-token"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"wispd exited with {proc.returncode} before it was ready; log:\n"
                + log_tail(log_path)
            )
        addr = addr_file.read_text().strip() if addr_file.exists() else ""
        token = token_file.read_text().strip() if token_file.exists() else ""
        if addr and token:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                f"wispd wrote no {addr_file.name}/{token_file.name} within {timeout:.0f}s; log:\n"
                + log_tail(log_path)
            )
        time.sleep(0.1)
    base_url = f"http://{addr}"
    # The address file is written once the socket is bound; make sure requests are answered.
    with httpx.Client(timeout=10.0) as c:
        for _ in range(100):
            try:
                r = c.get(f"{base_url}/v1/sprites", headers={"Authorization": f"Bearer {token}"})
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            proc.kill()
            raise RuntimeError("wispd does not answer GET /v1/sprites; log:\n" + log_tail(log_path))
    return Wispd(base_url=base_url, token=token, data_dir=data_dir, log_path=log_path, proc=proc)


def delete_test_sprites(w: Wispd, names: set) -> List[str]:
    """Deletes the given sprites and every sprite named NAME_PREFIX*; returns failures."""
    problems: List[str] = []
    with w.http() as c:
        try:
            listed = c.get("/v1/sprites", params={"prefix": NAME_PREFIX, "max_results": 100})
            if listed.status_code == 200:
                names = names | {s["name"] for s in listed.json().get("sprites", [])}
        except httpx.HTTPError as e:
            problems.append(f"listing sprites: {e}")
        for name in sorted(names):
            try:
                r = c.delete(f"/v1/sprites/{name}")
                if r.status_code not in (200, 204, 404):
                    problems.append(f"DELETE {name}: {r.status_code} {r.text}")
            except httpx.HTTPError as e:
                problems.append(f"DELETE {name}: {e}")
    return problems


def stop_wispd(w: Wispd) -> None:
    if w.proc.poll() is None:
        w.proc.send_signal(signal.SIGTERM)
        try:
            w.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(timeout=5)


def remove_data_dir(path: pathlib.Path) -> None:
    if os.environ.get("WISP_KEEP_TEST_DATA") == "1":
        print(f"keeping test data dir {path}")
        return
    # wispd keeps its storage pool (a loop-mounted btrfs) and checkpoint views mounted
    # across its own restarts; the test's daemon is gone, so they go too, deepest first.
    for point in sorted(mounts_under(path), key=lambda p: -p.count("/")):
        subprocess.run(["umount", "-l", point], check=False)
    left = mounts_under(path)
    if left:
        # Never recurse into a mount (a sprite root, a storage pool): leave it for inspection.
        print(f"not removing {path}: still mounted: {left}")
        return
    shutil.rmtree(path, ignore_errors=True)


class SpriteRegistry:
    """Names of sprites created during the session, for teardown."""

    def __init__(self) -> None:
        self.names: set = set()

    def add(self, name: str) -> str:
        self.names.add(name)
        return name


@pytest.fixture(scope="session")
def created() -> SpriteRegistry:
    return SpriteRegistry()


@pytest.fixture(scope="session")
def wispd(created: SpriteRegistry) -> Iterator[Wispd]:
    """One daemon for the whole session, in a temporary data dir."""
    global _CURRENT_LOG
    parent = os.environ.get("WISP_TEST_TMP", "/var/tmp")
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="wisp-sdk-test-", dir=parent))
    _CURRENT_LOG = data_dir / "wispd.log"
    w = start_wispd(data_dir)
    try:
        yield w
    finally:
        problems = delete_test_sprites(w, created.names)
        stop_wispd(w)
        _CURRENT_LOG = None
        if problems:
            print("teardown problems:\n  " + "\n  ".join(problems))
            print("wispd log tail:\n" + log_tail(w.log_path))
        remove_data_dir(data_dir)
        assert not problems, problems


@pytest.fixture(scope="session")
def client(wispd: Wispd) -> Iterator[SpritesClient]:
    """The official SDK client, pointed at our daemon."""
    c = SpritesClient(token=wispd.token, base_url=wispd.base_url, timeout=60.0)
    yield c
    c.close()


@pytest.fixture
def new_name(created: SpriteRegistry):
    """Returns a function that makes (and registers for cleanup) a fresh sprite name."""

    def make(tag: str = "") -> str:
        return created.add(unique_name(tag))

    return make


@pytest.fixture(scope="module")
def shared_sprite(client: SpritesClient, created: SpriteRegistry):
    """One sprite for a module's exec tests (creating one per test would only add time)."""
    name = created.add(unique_name("exec"))
    sprite = client.create_sprite(name)
    yield sprite
    try:
        client.delete_sprite(name)
    except NotFoundError:
        pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _CURRENT_LOG is not None and "wispd" in item.fixturenames:
        report.sections.append(("wispd log (tail)", log_tail(_CURRENT_LOG)))
