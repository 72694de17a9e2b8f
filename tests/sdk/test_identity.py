"""Identity after restore: every sandbox is restored from a checkpoint, yet each has its own boot
id (`/proc/sys/kernel/random/boot_id`), and its `/etc/resolv.conf` names its own default gateway
(the host answers DNS there), also after a snapshot restore moved it behind another gateway.
See firkin-agent's `identity` and `resolv` modules, and docs/security.md ("Per-sandbox identity
after a restore")."""

import re
import uuid

from e2b import Sandbox

BOOT_ID = "/proc/sys/kernel/random/boot_id"
MARKER = "# written by firkin-agent"
CAP_SYS_ADMIN = 21


def boot_id(sbx):
    value = sbx.commands.run(f"cat {BOOT_ID}").stdout.strip()
    assert str(uuid.UUID(value)) == value, f"not a UUID: {value!r}"
    return value


def gateway(sbx):
    """The default gateway, from `ip route` and from the kernel's table, which must agree."""
    m = re.search(r"^default via (\S+)", sbx.commands.run("ip route").stdout, re.M)
    assert m, "no default route"
    table = sbx.commands.run("cat /proc/net/route").stdout.splitlines()[1:]
    hexes = [f[2] for f in (line.split() for line in table) if f[1] == "00000000" and f[7] == "00000000"]
    assert len(hexes) == 1, table
    # network-order bytes printed as a little-endian number
    from_table = ".".join(str(b) for b in int(hexes[0], 16).to_bytes(4, "little"))
    assert from_table == m.group(1)
    return m.group(1)


def test_sandboxes_from_one_template_have_their_own_boot_id(sandboxes):
    a, b = sandboxes(timeout=60), sandboxes(timeout=60)
    assert boot_id(a) != boot_id(b), "both report the template build's boot id"
    assert boot_id(a) == boot_id(a), "stable while the sandbox runs"


def test_the_boot_id_cannot_be_changed_from_inside(sandbox):
    before = boot_id(sandbox)
    sandbox.commands.run(f"sudo umount {BOOT_ID}; echo x | sudo tee {BOOT_ID}; true", timeout=30)
    assert boot_id(sandbox) == before
    # The agent keeps the capability it mounts with to itself: root commands never get it.
    for cmd in ("grep CapEff /proc/self/status", "sudo grep CapEff /proc/self/status"):
        eff = int(sandbox.commands.run(cmd).stdout.split()[1], 16)
        assert not eff & (1 << CAP_SYS_ADMIN), f"{cmd}: CAP_SYS_ADMIN leaked"


def test_snapshot_children_get_a_new_boot_id_and_a_resume_keeps_it(sandboxes):
    src = sandboxes(timeout=120)
    original = boot_id(src)
    snap = src.create_snapshot()
    child = sandboxes(snap.snapshot_id, timeout=60)
    assert boot_id(child) != original
    assert boot_id(src) == original, "taking a snapshot does not change the source"
    # A resume continues the same system (processes, memory): nothing rebooted.
    assert src.pause() is True
    resumed = Sandbox.connect(src.sandbox_id)
    assert boot_id(resumed) == original
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True


def test_resolv_conf_names_the_sandboxs_gateway(sandboxes):
    a, b = sandboxes(timeout=60), sandboxes(timeout=60)
    for sbx in (a, b):
        assert sbx.files.read("/etc/resolv.conf") == f"{MARKER}\nnameserver {gateway(sbx)}\n"
    assert gateway(a) != gateway(b), "each sandbox has its own network"


def test_resolv_conf_follows_a_restore_and_a_users_file_is_kept(sandboxes):
    src = sandboxes(timeout=120)
    src.commands.run("echo 'search corp.test' | sudo tee -a /etc/resolv.conf")
    snap = src.create_snapshot()
    child = sandboxes(snap.snapshot_id, timeout=60)
    assert gateway(child) != gateway(src)
    # Rewritten for the child's gateway; the user's line is kept.
    want = f"{MARKER}\nnameserver {gateway(child)}\nsearch corp.test\n"
    assert child.files.read("/etc/resolv.conf") == want
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True

    # A resolver of the user's own is left alone, across a pause and resume too.
    mine = "nameserver 192.0.2.53\n"
    src.commands.run(f"printf '{mine}' | sudo tee /etc/resolv.conf")
    assert src.pause() is True
    resumed = Sandbox.connect(src.sandbox_id)
    assert resumed.files.read("/etc/resolv.conf") == mine
