"""Services (§3.8) through the official SDK (sprites-py): create streams, list/get shapes,
stop/start, signals, env and dir, the one-http_port rule, cycles, delete."""

from __future__ import annotations

import datetime
import time

import pytest
from sprites import SpritesClient
from sprites.exceptions import APIError


def events(stream) -> list:
    return [m for m in stream]


def types(msgs) -> list:
    return [m.type for m in msgs]


def wait_for(sprite, name: str, ok, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        svc = sprite.get_service(name)
        if ok(svc):
            return svc
        assert time.monotonic() < deadline, f"{name} never {what}: {svc}"
        time.sleep(0.1)


def running(svc) -> bool:
    return svc.state is not None and svc.state.status == "running"


def test_service_lifecycle(client: SpritesClient, new_name):
    name = new_name("svc")
    sprite = client.create_sprite(name)
    assert sprite.list_services() == []

    web = ["-m", "http.server", "8124", "--bind", "127.0.0.1"]
    msgs = events(sprite.create_service("web", "python3", web, http_port=8124, duration=1))
    assert msgs[0].type == "started", msgs
    assert msgs[-1].type == "complete", msgs
    assert msgs[-1].log_files["combined"] == "/.sprite/logs/services/web.log"
    assert all(m.timestamp > 1_700_000_000_000 for m in msgs)
    assert "exit" not in types(msgs)

    [svc] = sprite.list_services()
    assert (svc.name, svc.cmd, svc.args, svc.needs) == ("web", "python3", web, [])
    assert svc.http_port == 8124 and svc.env == {} and svc.dir is None
    st = svc.state
    assert st.name == "web" and st.status == "running" and st.restart_count == 0
    assert isinstance(st.pid, int) and st.pid > 1
    assert isinstance(st.started_at, datetime.datetime)
    assert st.next_restart_at is None and st.error is None
    assert sprite.get_service("web").state.pid == st.pid

    code = sprite.command(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8124/"
    ).output()
    assert code == b"200"

    # Stop: stopping → stopped → complete; a second stop is 409.
    msgs = events(sprite.stop_service("web"))
    assert types(msgs) == ["stopping", "stopped", "complete"], msgs
    assert sprite.get_service("web").state.status == "stopped"
    with pytest.raises(APIError) as e:
        sprite.stop_service("web")
    assert e.value.status_code == 409

    # Start again: a new process.
    msgs = events(sprite.start_service("web", duration=0.5))
    assert msgs[0].type == "started" and msgs[-1].type == "complete", msgs
    svc = wait_for(sprite, "web", running, "running")
    assert svc.state.started_at > st.started_at

    # Signals: TERM kills it, which counts as a crash: it is restarted.
    with pytest.raises(APIError) as e:
        sprite.signal_service("web", "NOPE")
    assert e.value.status_code == 400
    with pytest.raises(APIError) as e:
        sprite.signal_service("ghost", "TERM")
    assert e.value.status_code == 404
    sprite.signal_service("web", "SIGTERM")
    wait_for(sprite, "web", lambda s: running(s) and s.state.restart_count == 1, "restarted")

    # Environment and working directory.
    msgs = events(
        sprite.create_service(
            "envy", "sh", ["-c", "echo $FOO; pwd; exec sleep 100000"],
            env={"FOO": "bar"}, dir="/tmp", duration=1,
        )
    )
    out = [m.data for m in msgs if m.type == "stdout"]
    assert out == ["bar", "/tmp"], msgs
    envy = sprite.get_service("envy")
    assert envy.env == {"FOO": "bar"} and envy.dir == "/tmp"

    # One http_port per sprite; no dependency cycles; unknown services are 404.
    with pytest.raises(APIError) as e:
        sprite.create_service("other", "sleep", ["1000"], http_port=9000)
    assert e.value.status_code == 409
    assert "another service already has an HTTP port configured" in e.value.response
    events(sprite.create_service("b", "sleep", ["100000"], needs=["envy"], duration=0.1))
    with pytest.raises(APIError) as e:
        sprite.create_service("envy", "sleep", ["100000"], needs=["b"])
    assert e.value.status_code == 400
    with pytest.raises(APIError) as e:
        sprite.get_service("ghost")
    assert e.value.status_code == 404

    # Delete: the process goes, the service is unknown afterwards.
    pid = sprite.get_service("b").state.pid
    sprite.delete_service("b")
    with pytest.raises(APIError) as e:
        sprite.get_service("b")
    assert e.value.status_code == 404
    assert sprite.command("sh", "-c", f"kill -0 {pid} 2>/dev/null || echo gone").output() == b"gone\n"
    assert sorted(s.name for s in sprite.list_services()) == ["envy", "web"]
    client.delete_sprite(name)


def test_crash_restart_count(client: SpritesClient, new_name):
    name = new_name("svccrash")
    sprite = client.create_sprite(name)
    msgs = events(sprite.create_service("crash", "sh", ["-c", "echo bye; exit 7"], duration=5))
    assert types(msgs) == ["started", "stdout", "exit", "complete"], msgs
    assert msgs[2].exit_code == 7
    svc = wait_for(sprite, "crash", lambda s: s.state.restart_count >= 2, "restarted twice")
    assert svc.state.error == "exited with code 7"
    svc = wait_for(sprite, "crash", lambda s: s.state.status == "failed", "failed")
    assert isinstance(svc.state.next_restart_at, datetime.datetime)
    client.delete_sprite(name)
