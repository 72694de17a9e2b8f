"""envd filesystem + /files through the SDK: write/read/list/exists/info/make_dir/rename/remove,
watchers (sync and async), signed URLs, gzip, metadata."""

import asyncio
import time

import httpx
import pytest
from e2b import AsyncSandbox, FileType, FilesystemEventType
from e2b.exceptions import FileNotFoundException, InvalidArgumentException
from e2b.sandbox.filesystem.filesystem import WriteEntry


def test_write_and_read_text_and_bytes(sandbox):
    info = sandbox.files.write("/home/user/notes/a.txt", "hello\nworld")
    assert info.path == "/home/user/notes/a.txt"
    assert sandbox.files.read("/home/user/notes/a.txt") == "hello\nworld"
    blob = bytes(range(256)) * 64
    sandbox.files.write("/home/user/blob.bin", blob)
    assert bytes(sandbox.files.read("/home/user/blob.bin", format="bytes")) == blob
    # the file belongs to the sandbox user and is visible to commands
    assert sandbox.commands.run("stat -c %U /home/user/notes/a.txt").stdout == "user\n"
    assert sandbox.commands.run("cat /home/user/notes/a.txt").stdout == "hello\nworld"
    # overwrite truncates
    sandbox.files.write("/home/user/notes/a.txt", "x")
    assert sandbox.files.read("/home/user/notes/a.txt") == "x"


def test_write_files_many(sandbox):
    entries = [WriteEntry(path=f"/home/user/many/f{i}.txt", data=f"content {i}") for i in range(5)]
    infos = sandbox.files.write_files(entries)
    assert sorted(i.path for i in infos) == sorted(e["path"] for e in entries)
    for i in range(5):
        assert sandbox.files.read(f"/home/user/many/f{i}.txt") == f"content {i}"


def test_gzip_upload_and_download(sandbox):
    text = "compressible " * 1000
    sandbox.files.write("/home/user/gz.txt", text, gzip=True)
    assert sandbox.files.read("/home/user/gz.txt", gzip=True) == text
    assert sandbox.commands.run("wc -c < /home/user/gz.txt").stdout.strip() == str(len(text))


def test_metadata_round_trip(sandbox):
    sandbox.files.write("/home/user/meta.txt", "m", metadata={"Owner": "agent-7"})
    info = sandbox.files.get_info("/home/user/meta.txt")
    assert info.metadata.get("owner") == "agent-7"


def test_list_with_depth(sandbox):
    sandbox.commands.run("mkdir -p /home/user/tree/a/b && touch /home/user/tree/top.txt /home/user/tree/a/mid.txt /home/user/tree/a/b/deep.txt")
    one = {e.path for e in sandbox.files.list("/home/user/tree")}
    assert one == {"/home/user/tree/a", "/home/user/tree/top.txt"}
    two = {e.path for e in sandbox.files.list("/home/user/tree", depth=2)}
    assert two == one | {"/home/user/tree/a/b", "/home/user/tree/a/mid.txt"}
    kinds = {e.name: e.type for e in sandbox.files.list("/home/user/tree")}
    assert kinds == {"a": FileType.DIR, "top.txt": FileType.FILE}


def test_exists_info_make_dir_rename_remove(sandbox):
    assert sandbox.files.exists("/home/user/nope") is False
    assert sandbox.files.make_dir("/home/user/d1/d2") is True
    assert sandbox.files.make_dir("/home/user/d1/d2") is False
    assert sandbox.files.exists("/home/user/d1/d2") is True
    sandbox.files.write("/home/user/d1/f.txt", "12345")
    info = sandbox.files.get_info("/home/user/d1/f.txt")
    assert info.type == FileType.FILE and info.size == 5 and info.name == "f.txt"
    assert info.path == "/home/user/d1/f.txt"
    assert info.permissions.startswith("-rw")
    assert sandbox.files.get_info("/home/user/d1").type == FileType.DIR
    moved = sandbox.files.rename("/home/user/d1/f.txt", "/home/user/d1/g.txt")
    assert moved.path == "/home/user/d1/g.txt"
    assert not sandbox.files.exists("/home/user/d1/f.txt")
    assert sandbox.files.read("/home/user/d1/g.txt") == "12345"
    sandbox.files.remove("/home/user/d1")
    assert not sandbox.files.exists("/home/user/d1")
    sandbox.files.remove("/home/user/d1")  # removing a missing path is not an error
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info("/home/user/d1")
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("/home/user/d1/g.txt")


def test_watch_dir_sync(sandbox):
    sandbox.files.make_dir("/home/user/watched")
    handle = sandbox.files.watch_dir("/home/user/watched")
    try:
        sandbox.files.write("/home/user/watched/new.txt", "data")
        sandbox.commands.run("echo more >> /home/user/watched/new.txt && rm /home/user/watched/new.txt")
        events = []
        deadline = time.time() + 10
        while time.time() < deadline:
            events += handle.get_new_events()
            if any(e.type == FilesystemEventType.REMOVE for e in events):
                break
            time.sleep(0.2)
        names = {e.name for e in events}
        types = {e.type for e in events}
        assert "new.txt" in names
        assert FilesystemEventType.CREATE in types or FilesystemEventType.WRITE in types
        assert FilesystemEventType.REMOVE in types
    finally:
        handle.stop()


def test_watch_dir_async():
    async def main():
        sbx = await AsyncSandbox.create(timeout=60)
        try:
            await sbx.files.make_dir("/home/user/aw")
            events = []
            handle = await sbx.files.watch_dir("/home/user/aw", on_event=events.append, recursive=True)
            await sbx.files.write("/home/user/aw/x.txt", "1")
            await sbx.commands.run("mkdir -p /home/user/aw/sub")
            # inotify watches a new subdirectory once its create event is seen (as envd does)
            for _ in range(25):
                if "sub" in {e.name for e in events}:
                    break
                await asyncio.sleep(0.2)
            await sbx.commands.run("echo 2 > /home/user/aw/sub/y.txt")
            for _ in range(50):
                if {"x.txt", "sub/y.txt"} <= {e.name for e in events}:
                    break
                await asyncio.sleep(0.2)
            await handle.stop()
            return events
        finally:
            await sbx.kill()

    events = asyncio.run(main())
    names = {e.name for e in events}
    assert "x.txt" in names
    assert "sub/y.txt" in names


def test_signed_urls_work_without_routing_headers(sandbox):
    sandbox.files.write("/home/user/shared.txt", "via url")
    url = sandbox.download_url("/home/user/shared.txt")
    assert "signature=" in url
    r = httpx.get(url)  # a plain client: no E2b-Sandbox-Id, no access token
    assert r.status_code == 200, r.text
    assert r.text == "via url"
    up = sandbox.upload_url("/home/user/uploaded.txt")
    r = httpx.post(up, files={"file": ("uploaded.txt", b"posted bytes")})
    assert r.status_code == 200, r.text
    assert sandbox.files.read("/home/user/uploaded.txt") == "posted bytes"
    tampered = url.replace("shared.txt", "other.txt")
    assert httpx.get(tampered).status_code == 401
    expired = sandbox.download_url("/home/user/shared.txt", use_signature_expiration=1)
    time.sleep(2.5)
    assert httpx.get(expired).status_code == 401


def test_reading_a_directory_is_invalid(sandbox):
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read("/home/user")
