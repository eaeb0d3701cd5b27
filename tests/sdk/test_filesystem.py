"""The filesystem API (Sprites API §3.7) through the official SDK's pathlib-like interface.

Quirks of the SDK that the server keeps on purpose (see sprites-api.md §3.7): `stat` is a
`list` of the path taking the first entry, so on a directory it describes the first child,
and `iterdir` on a file yields the file itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from sprites import (
    AsyncSpritesClient,
    DirectoryNotEmptyError,
    FileNotFoundError_,
    FilesystemError,
    IsADirectoryError_,
    NotFoundError,
    PermissionError_,
    SpritesClient,
)


@pytest.fixture(scope="module")
def sprite(client: SpritesClient, created):
    from conftest import unique_name

    name = created.add(unique_name("fs"))
    s = client.create_sprite(name)
    yield s
    try:
        client.delete_sprite(name)
    except NotFoundError:
        pass


@pytest.fixture
def home(sprite):
    """A fresh directory under the sprite user's home, as a SpritePath."""
    fs = sprite.filesystem("/home/sprite")
    d = fs / f"t-{os.urandom(4).hex()}"
    d.mkdir()
    yield d
    d.rmtree()


def sh(sprite, script: str) -> str:
    return sprite.command("sh", "-c", script).output().decode()


def test_write_and_read_text_and_bytes(sprite, home):
    p = home / "hello.txt"
    p.write_text("héllo\n")
    assert p.read_text() == "héllo\n"
    assert p.read_bytes() == "héllo\n".encode()
    data = bytes(range(256)) * 1000
    (home / "bin.dat").write_bytes(data)
    assert (home / "bin.dat").read_bytes() == data
    # Written as the sprite user, with the requested mode.
    (home / "run.sh").write_text("#!/bin/sh\necho ran\n", mode=0o755)
    assert sh(sprite, f"stat -c %U:%G:%a {home}/hello.txt {home}/run.sh") == (
        "sprite:sprite:644\nsprite:sprite:755\n"
    )
    assert sh(sprite, f"{home}/run.sh") == "ran\n"


def test_large_file_round_trip(home):
    data = os.urandom(8 << 20)
    p = home / "big.bin"
    p.write_bytes(data)
    got = p.read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert p.stat().size == len(data)


def test_stat_exists_is_file_is_dir(home):
    f = home / "f.txt"
    f.write_text("1234")
    st = f.stat()
    assert (st.name, st.path, st.size, st.mode, st.is_dir) == ("f.txt", str(f), 4, "0644", False)
    assert st.mod_time.year >= 2024
    assert f.exists() and f.is_file() and not f.is_dir()
    missing = home / "missing"
    assert not missing.exists()
    with pytest.raises(FileNotFoundError_):
        missing.stat()
    with pytest.raises(FileNotFoundError_):
        missing.read_bytes()
    # A directory whose first child is a directory reads as a directory (the SDK's stat
    # takes the first entry of a list).
    (home / "d" / "a-sub").mkdir(parents=True)
    assert (home / "d").is_dir()


def test_mkdir_iterdir_listdir(sprite, home):
    (home / "x" / "y" / "z").mkdir(parents=True)
    assert sh(sprite, f"stat -c %U:%a {home}/x {home}/x/y/z") == "sprite:755\nsprite:755\n"
    # .keep was only the SDK's way to create the directory.
    assert (home / "x" / "y" / "z").listdir() == []
    with pytest.raises(FileNotFoundError_):
        (home / "no" / "parents").mkdir()
    (home / "x" / "b.txt").write_text("b")
    (home / "x" / "a.txt").write_text("a")
    assert (home / "x").listdir() == ["a.txt", "b.txt", "y"]
    assert [p.name for p in (home / "x").iterdir()] == ["a.txt", "b.txt", "y"]
    assert [str(p) for p in (home / "x").iterdir()][0] == f"{home}/x/a.txt"


def test_unlink_rmdir_rmtree(home):
    f = home / "gone.txt"
    f.write_text("x")
    f.unlink()
    assert not f.exists()
    with pytest.raises(FileNotFoundError_):
        f.unlink()
    f.unlink(missing_ok=True)
    (home / "full" / "deep").mkdir(parents=True)
    (home / "full" / "deep" / "f").write_text("f")
    with pytest.raises(DirectoryNotEmptyError):
        (home / "full").rmdir()
    (home / "full" / "deep" / "f").unlink()
    (home / "full" / "deep").rmdir()
    (home / "full").rmtree()
    assert not (home / "full").exists()


def test_rename_and_replace(home):
    a = home / "a.txt"
    a.write_text("A")
    b = a.rename("b.txt")
    assert str(b) == f"{home}/b.txt"
    assert b.read_text() == "A" and not a.exists()
    (home / "c.txt").write_text("C")
    c = (home / "c.txt").replace(b)
    assert c.read_text() == "C"
    with pytest.raises(FileNotFoundError_):
        (home / "nope").rename("nope2")


def test_copy_file_and_tree(sprite, home):
    (home / "src" / "sub").mkdir(parents=True)
    (home / "src" / "one").write_text("1")
    (home / "src" / "sub" / "two").write_text("22")
    copied = (home / "src" / "one").copy_to("one-copy")
    assert copied.read_text() == "1"
    tree = (home / "src").copy_to(home / "dst")
    assert (tree / "sub" / "two").read_text() == "22"
    assert tree.listdir() == ["one", "one-copy", "sub"]
    assert sh(sprite, f"stat -c %U {home}/dst/sub/two") == "sprite\n"


def test_chmod(sprite, home):
    f = home / "script"
    f.write_text("#!/bin/sh\n")
    f.chmod(0o700)
    assert f.stat().mode == "0700"
    (home / "tree" / "in").mkdir(parents=True)
    (home / "tree" / "in" / "f").write_text("f")
    (home / "tree").chmod(0o750, recursive=True)
    assert sh(sprite, f"stat -c %a {home}/tree {home}/tree/in/f") == "750\n750\n"


def test_touch(home):
    t = home / "touched"
    t.touch()
    assert t.read_bytes() == b""
    t.write_text("keep")
    t.touch()
    assert t.read_text() == "keep"


def test_errors_map_to_sdk_exceptions(sprite, home):
    root = sprite.filesystem("/")
    with pytest.raises(PermissionError_):
        (root / "etc" / "passwd").write_text("nope\n")
    with pytest.raises(PermissionError_):
        (root / "etc" / "shadow").read_bytes()
    with pytest.raises(IsADirectoryError_):
        home.read_bytes()
    assert "root:" in (root / "etc" / "passwd").read_text()
    with pytest.raises(FilesystemError):
        (home / "x").chmod(0o777)


def test_paths_resolve_inside_the_sprite(sprite, home):
    sprite_hostname = (sprite.filesystem("/") / "etc" / "hostname").read_text()
    fs = sprite.filesystem(str(home))
    # `..` stops at the sprite's root; absolute symlinks point into the sprite.
    assert (fs / "../../../../../../etc/hostname").read_text() == sprite_hostname
    sh(sprite, f"ln -s / {home}/root-link")
    assert (fs / "root-link" / "etc" / "hostname").read_text() == sprite_hostname
    sh(sprite, f"ln -s /proc/1/root {home}/init-root")
    with pytest.raises(FilesystemError):
        (fs / "init-root" / "etc" / "hostname").read_text()


def test_async_filesystem(wispd, sprite, home):
    async def run() -> None:
        async with AsyncSpritesClient(token=wispd.token, base_url=wispd.base_url) as c:
            fs = c.sprite(sprite.name).filesystem(str(home))
            p = fs / "async.txt"
            await p.write_text("async")
            assert await p.read_text() == "async"
            assert await p.exists()
            assert "async.txt" in await fs.cwd.listdir()
            await p.unlink()
            assert not await p.exists()

    asyncio.run(run())
