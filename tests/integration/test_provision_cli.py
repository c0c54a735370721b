"""semail-admin's provisioning commands on the development setup (directory
backend, no DNS, no containers, no LDAP): export, delete --archive, keys,
resize, mount-all, and mail refused once a delete has begun.

The transactions themselves (undo at each step, resume after a crash,
image backend, BIND9, slapd) are specified by tests/unit/test_provision.c.
"""
import json
import os
import tarfile

import semail_it as it

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1cHVzbG9yZW1pcHN1bWRvbG9yc2l0YW1ldGNv "
       "alice@laptop")


def _show(platform, login):
    p = platform.admin("user", "show", login, "--json")
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout.decode())


def test_export_and_delete_with_archive_keep_the_mail(platform, tmp_path):
    platform.create_user("alice")
    with open(platform.box("alice"), "w") as f:
        f.write("From a@b Thu Jan  1 00:00:00 2026\nSubject: hi\n\nhello\n\n")
    os.symlink("/etc/shadow", os.path.join(platform.mail_root, "alice", "shadow"))

    out = str(tmp_path / "alice.tar.gz")
    p = platform.admin("user", "export", "alice", out)
    assert p.returncode == 0, p.stderr.decode()
    with tarfile.open(out) as t:
        assert b"hello" in t.extractfile("alice/INBOX").read()
        link = t.getmember("alice/shadow")
        assert link.issym() and link.linkname == "/etc/shadow"

    p = platform.admin("user", "export", "alice", str(tmp_path / "alice.zip"))
    assert p.returncode == 1 and b".tar" in p.stderr

    final = str(tmp_path / "final.tar")
    p = platform.admin("user", "delete", "alice", "--archive", final)
    assert p.returncode == 0, p.stderr.decode()
    with tarfile.open(final) as t:
        assert b"hello" in t.extractfile("alice/INBOX").read()
    assert platform.users_json() == []
    assert not os.path.exists(os.path.join(platform.mail_root, "alice"))


def test_keys_and_resize_are_recorded(platform, tmp_path):
    platform.create_user("alice")
    keyfile = tmp_path / "alice.pub"
    keyfile.write_text(KEY + "\n")
    p = platform.admin("user", "keys", "alice", "--ssh-key", str(keyfile))
    assert p.returncode == 0, p.stderr.decode()
    assert _show(platform, "alice")["ssh_keys"] == KEY

    bad = tmp_path / "bad.pub"
    bad.write_text("rm -rf /\n")
    p = platform.admin("user", "keys", "alice", "--ssh-key", str(bad))
    assert p.returncode == 1 and b"line 1" in p.stderr
    assert _show(platform, "alice")["ssh_keys"] == KEY

    p = platform.admin("user", "keys", "alice", "--none")
    assert p.returncode == 0, p.stderr.decode()
    assert _show(platform, "alice")["ssh_keys"] is None

    p = platform.admin("user", "resize", "alice", "--size", "2G")
    assert p.returncode == 0, p.stderr.decode()
    assert _show(platform, "alice")["size"] == 2 << 30


def test_show_reports_state_and_a_null_ssh_port_without_container(platform):
    platform.create_user("alice")
    obj = _show(platform, "alice")
    assert obj["state"] == "active" and obj["ssh_port"] is None and obj["container"] is None


def test_mount_all_succeeds_on_the_directory_backend(platform):
    platform.create_user("alice")
    platform.create_user("bob")
    p = platform.admin("mount-all")
    assert p.returncode == 0, p.stderr.decode()
    assert b"alice up" in p.stderr and b"bob up" in p.stderr


def _rcpt_code(platform, addr):
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<bob@example.org>", 250)
        return c.cmd("RCPT TO:<%s>" % addr).code


def test_mail_is_refused_once_delete_has_begun(platform, server):
    addr = platform.create_user("alice")
    server()
    assert _rcpt_code(platform, addr) == 250
    # a delete interrupted after its first step: the record says deleting
    reg = os.path.join(platform.state_dir, "registry")
    text = open(reg).read()
    assert "state=active" in text
    with open(reg + ".new", "w") as f:
        f.write(text.replace("state=active", "state=deleting"))
    os.rename(reg + ".new", reg)
    assert _rcpt_code(platform, addr) == 550
    p = platform.admin("user", "delete", "alice")
    assert p.returncode == 0, p.stderr.decode()
    assert platform.users_json() == []
    assert _rcpt_code(platform, addr) == 550
