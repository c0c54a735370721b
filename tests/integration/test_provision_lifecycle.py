"""Changing a box (issue 4): a full filesystem gives 452 at semail-inbound and
loses nothing, `user keys` reaches the running container, `user delete
--archive` takes everything away (container, filesystem, loop device, DNS
records, registry record; mail refused with 550 5.1.1) and keeps the mail in
the archive, `user export` writes a tar archive. Each test makes its own
platform and box."""

import os
import tarfile

import provision_it as pv
import semail_it as it

ALICE = "alice@alice.semail.test"

def test_a_full_filesystem_gives_452_and_loses_nothing(pplatform, pinbound):
    p = pplatform
    alice = pv.make_box(p, "alice", "alice", size="8M")
    r, final, _ = pv.deliver(p.port, ALICE, "before full")
    assert final is not None and final.code == 250, (r, final)
    before = open(p.box("alice"), "rb").read()
    # She fills her own filesystem from inside: the size is her quota.
    fill = alice.ssh("dd if=/dev/zero of=~/mail/fill bs=64k 2>&1; sync; df -k ~/mail",
                     timeout=120)
    assert b"No space left on device" in fill.stdout, fill.stdout.decode()[-800:]
    assert os.path.getsize(os.path.join(p.mount_point("alice"), "fill")) <= 8 << 20
    body = ("x" * 70 + "\n") * 3000              # ~210 KB: cannot fit
    r, final, _ = pv.deliver(p.port, ALICE, "while full", body=body)
    code = final.code if final is not None else r.code
    assert code == 452, "expected 452 with a full filesystem, got RCPT %r, DATA %r" % (r, final)
    assert open(p.box("alice"), "rb").read() == before, "the INBOX changed on a failed append"
    alice.sh("rm ~/mail/fill")
    r, final, _ = pv.deliver(p.port, ALICE, "after full", body=body)
    assert final is not None and final.code == 250, (r, final)
    assert [m.header_value("Subject") for m in p.messages("alice")] == ["before full",
                                                                         "after full"]


def test_a_key_change_reaches_the_running_container(pplatform):
    p = pplatform
    pv.require("user keys")
    alice = pv.make_box(p, "alice", "alice")
    started = p.bed.engine.inspect("semail-alice")["State"]["StartedAt"]
    r = p.admin("user", "keys", "alice", "--ssh-key", p.bed.keys.pub("alice-new"))
    pv.skip_if_not_yet(r, "user keys")
    assert r.returncode == 0, r.stderr.decode()
    old = pv.ssh(alice.port, "alice", alice.key, "true", timeout=30)
    assert old.returncode == 255 and b"Permission denied" in old.stderr, \
        "the old key still works after `user keys`: %r" % old
    new = pv.ssh(alice.port, "alice", p.bed.keys.path("alice-new"), "id -un", timeout=30)
    assert new.returncode == 0 and new.stdout == b"alice\n", new
    # The same container, not a new one.
    assert p.bed.engine.inspect("semail-alice")["State"]["StartedAt"] == started
    assert "alice-new" in (p.show("alice").get("ssh_keys") or ""), p.show("alice")


def test_delete_with_archive_takes_everything_away_and_keeps_the_mail(pplatform, pinbound,
                                                                      tmp_path):
    p = pplatform
    pv.require("archive")
    pv.make_box(p, "alice", "alice")
    r, final, msg = pv.deliver(p.port, ALICE, "keep me")
    assert final is not None and final.code == 250
    image = p.image_path("alice")
    archive = str(tmp_path / "alice.tar.gz")
    p.delete("alice", archive=archive)
    assert p.leftovers("alice", sub="alice") == [], p.describe("alice")
    assert p.bed.engine.inspect("semail-alice") is None
    assert not os.path.exists(image)
    assert pv.loops_gone(image) == {}
    assert pv.mount_at(p.mount_point("alice")) is None
    for rtype in ("MX", "TXT"):
        assert p.bed.named.status("alice.semail.test", rtype) == "NXDOMAIN"
    assert p.show("alice") is None
    assert "alice" not in p.registry_logins()
    # Mail to her is refused from then on.
    with it.Smtp(p.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@example.org>").code == 250
        rcpt = c.cmd("RCPT TO:<%s>" % ALICE)
        c.quit()
    assert rcpt.code == 550 and rcpt.enhanced == "5.1.1", rcpt
    # The archive holds her INBOX with the message.
    with tarfile.open(archive, "r:gz") as t:
        names = t.getnames()
        assert "alice/INBOX" in names, names
        data = t.extractfile("alice/INBOX").read()
    msgs = it.parse_mboxrd(data)
    assert [m.header_value("Subject") for m in msgs] == ["keep me"]
    assert msgs[0].text.endswith(msg)


def test_user_export_writes_the_mail_as_a_tar_archive(pplatform, pinbound, tmp_path):
    p = pplatform
    pv.require("user export")
    pv.make_box(p, "alice", "alice")
    r, final, msg = pv.deliver(p.port, ALICE, "export me")
    assert final is not None and final.code == 250
    out = str(tmp_path / "export.tar")
    r = p.admin("user", "export", "alice", out)
    pv.skip_if_not_yet(r, "user export")
    assert r.returncode == 0, r.stderr.decode()
    with tarfile.open(out, "r:") as t:
        data = t.extractfile("alice/INBOX").read()
    assert [m.header_value("Subject") for m in it.parse_mboxrd(data)] == ["export me"]
    # The box is untouched.
    assert pv.mount_at(p.mount_point("alice")) is not None
    assert p.bed.engine.inspect("semail-alice")["State"]["Running"]


def test_resize_grows_the_filesystem_the_container_sees(pplatform):
    p = pplatform
    pv.require("user resize")
    alice = pv.make_box(p, "alice", "alice", size="16M")
    size = lambda: int(alice.sh("df -k --output=size ~/mail | tail -1").strip())
    before = size()
    r = p.admin("user", "resize", "alice", "--size", "48M")
    pv.skip_if_not_yet(r, "user resize")
    assert r.returncode == 0, r.stderr.decode()
    assert os.path.getsize(p.image_path("alice")) == 48 << 20
    # Where the kernel cannot grow a mounted ext4, the container was
    # restarted around an offline grow: its sshd takes a moment to come back.
    pv.wait_ssh(alice.port, "alice", alice.key, diag=lambda: p.describe("alice"))
    after = size()
    assert after > before + 24 * 1024, "df in the container: %d KiB before, %d after" % (before,
                                                                                      after)
    assert p.show("alice")["size"] == 48 << 20
    assert len(pv.loops_backing(p.image_path("alice"))) == 1
