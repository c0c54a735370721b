"""`user create` as a transaction (issue 4, SPEC.md sections 6 and 7): a
failure injected at each step leaves nothing behind (no record, no DNS
records, no image, no mount, no loop device, no container, no keys), running
the command again once the fault is gone finishes the job, a create killed
half-way is finished by the next one, a name already taken is refused
without touching its owner, and bad input is refused with a clear message
before anything is made."""

import os
import re
import signal
import subprocess
import time

import pytest

import provision_it as pv
import semail_it as it

ALICE = "alice@alice.semail.test"


def assert_refused(p, *words):
    """P failed with a message on stderr naming each of WORDS (case-insensitive)."""
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode != 0, "expected a refusal, got exit 0:\n%s" % p.stdout.decode()
    assert it.sanitizer_report(err) is None, err
    for w in words:
        assert w.lower() in err.lower(), "message %r does not name %r" % (err.strip(), w)
    return err


def assert_box_works(platform, login="alice", key="alice"):
    """The box is active, its container answers SSH with the key, its mail mounted."""
    info = platform.show(login)
    assert info is not None and info["state"] == "active", info
    k = platform.bed.keys.path(key)
    pv.wait_ssh(info["ssh_port"], login, k, diag=lambda: platform.describe(login))
    p = pv.ssh(info["ssh_port"], login, k, "id -u; stat -c %u ~/mail")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().split() == [str(info["uid"])] * 2, p.stdout
    assert pv.mount_at(platform.mount_point(login)) is not None
    return info


# --------------------------------------------------------------------------
# A failure at each step


def test_dns_server_down_leaves_nothing_and_a_rerun_finishes(pplatform):
    p = pplatform
    with pv.stopped(p.bed.named):
        t = time.monotonic()
        r = p.create("alice", expect_ok=False)
        pv.skip_if_not_yet(r, "user create")
        err = assert_refused(r)
        assert time.monotonic() - t < 60, "create took %.0fs with named down" % (
            time.monotonic() - t)
    assert re.search(r"dns|127\.0\.0\.1:%d|name server" % p.bed.named.port, err, re.I), \
        "the message does not say the DNS update failed: %r" % err
    assert p.leftovers("alice", sub="alice") == [], p.describe("alice")
    p.create("alice")
    assert_box_works(p)
    assert p.bed.named.dig("alice.semail.test", "MX").strip() == "10 %s." % pv.MX_HOST


def test_engine_down_leaves_nothing_and_a_rerun_finishes(pplatform):
    p = pplatform
    with pv.stopped(p.bed.engine):
        r = p.create("alice", expect_ok=False)
        pv.skip_if_not_yet(r, "user create")
        err = assert_refused(r)
        engine_down_leftovers = p.leftovers("alice", sub="alice")
    assert re.search(r"engine|docker|container|%s" % re.escape(p.bed.engine.sock), err, re.I), \
        "the message does not say the container engine failed: %r" % err
    assert engine_down_leftovers == [], p.describe("alice")
    assert p.leftovers("alice", sub="alice") == [], p.describe("alice")
    p.create("alice")
    assert_box_works(p)


def test_no_free_loop_device_leaves_nothing_and_a_rerun_finishes(pplatform):
    p = pplatform
    r = p.create("alice", expect_ok=False, wrap=pv.no_loop_device_wrap())
    if r.returncode == 99:
        pytest.skip("cannot hide the loop devices in a mount namespace: %s" % r.stderr.decode())
    pv.skip_if_not_yet(r, "user create")
    err = assert_refused(r)
    assert "loop" in err.lower(), "the message does not name the loop device: %r" % err
    assert p.leftovers("alice", sub="alice") == [], p.describe("alice")
    p.create("alice")
    assert_box_works(p)


def test_a_taken_subdomain_is_refused_and_its_owner_keeps_everything(pplatform):
    p = pplatform
    p.create("alice")
    before = p.dns_names("alice")
    r = p.create("bob", sub="alice", key="bob", expect_ok=False)
    assert_refused(r, "alice")
    assert p.leftovers("bob") == [], p.describe("bob")
    assert p.dns_names("alice") == before, "bob's failed create touched alice's DNS records"
    assert_box_works(p)


def test_a_taken_login_or_address_is_refused(pplatform):
    p = pplatform
    p.create("alice")
    # The same login with another subdomain.
    r = p.create("alice", sub="alice2", expect_ok=False)
    assert_refused(r, "alice")
    assert p.dns_names("alice2") == set()
    # The same address through another login: bob asks for alice@ on her subdomain.
    r = p.create("bob", ident="alice", sub="alice", key="bob", expect_ok=False)
    assert_refused(r)
    assert p.leftovers("bob") == [], p.describe("bob")
    assert_box_works(p)


def test_a_name_already_in_the_zone_is_refused_and_the_record_kept(pplatform):
    p = pplatform
    name = "bob.%s." % pv.ZONE
    rc, out = p.bed.named.update(pv.ZONE, "add %s 60 MX 10 mx.elsewhere.example." % name)
    assert rc == 0, out
    r = p.create("bob", key="bob", expect_ok=False)
    assert_refused(r, "bob")
    assert p.dns_names("bob") == {(name, "MX", "10 mx.elsewhere.example.")}, \
        "the create changed a record it did not make"
    assert p.leftovers("bob") == [], p.describe("bob")


def test_a_taken_own_domain_is_refused(pplatform):
    p = pplatform
    p.create("alice", domain=pv.OWN_DOMAIN)
    r = p.create("bob", domain=pv.OWN_DOMAIN, key="bob", expect_ok=False)
    assert_refused(r, pv.OWN_DOMAIN)
    assert p.leftovers("bob") == [], p.describe("bob")
    assert p.show("alice")["address"] == "alice@" + pv.OWN_DOMAIN


def test_a_create_killed_half_way_is_finished_by_the_next_one(pplatform):
    """The engine hangs (SIGSTOP) while the create waits on it; the create is
    killed with SIGKILL; the same command run again finishes the box."""
    p = pplatform
    args = [it.ADMIN, "-c", p.conf, "user", "create", "alice", "--id", "alice",
            "--subdomain", "alice", "--ssh-key", p.bed.keys.pub("alice")]
    p.logins.add("alice")
    with pv.frozen(p.bed.engine):
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            # Wait for the steps before the container to be done (bounded).
            end = time.monotonic() + 20
            while time.monotonic() < end and proc.poll() is None:
                if pv.mount_at(p.mount_point("alice")) is not None:
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            reached = p.describe("alice")
            assert proc.poll() is None, "create ended while the engine hung (%d): %s" % (
                proc.returncode, proc.stderr.read().decode())
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    r = p.create("alice")
    assert "interrupted" in r.stdout.decode() or "finish" in r.stdout.decode(), \
        "the rerun does not say it finished an interrupted create: %r\n(state when killed:\n%s)" \
        % (r.stdout.decode(), reached)
    assert_box_works(p)
    assert p.bed.named.dig("alice.semail.test", "MX").strip() == "10 %s." % pv.MX_HOST
    assert len(pv.loops_backing(p.image_path("alice"))) == 1


def test_a_delete_killed_half_way_refuses_mail_and_is_finished_by_the_next_one(pplatform,
                                                                             pinbound):
    p = pplatform
    p.create("alice")
    args = [it.ADMIN, "-c", p.conf, "user", "delete", "alice"]
    with pv.frozen(p.bed.engine):
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            time.sleep(2.0)          # marked deleting, now waiting on the hung engine
            assert proc.poll() is None, "delete ended while the engine hung (%d): %s" % (
                proc.returncode, proc.stderr.read().decode())
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    # Interrupted: mail is refused already (only active boxes receive).
    rr, final, _ = pv.deliver(p.port, ALICE, "during the delete")
    assert rr.code == 550 and rr.enhanced == "5.1.1", rr
    p.delete("alice")
    assert p.leftovers("alice", sub="alice") == [], p.describe("alice")


def test_a_failed_create_then_delete_leaves_nothing(pplatform):
    """A create that failed half-way can also be taken back with delete."""
    p = pplatform
    with pv.stopped(p.bed.engine):
        r = p.create("alice", expect_ok=False)
        pv.skip_if_not_yet(r, "user create")
        assert r.returncode != 0
    r = p.delete("alice", expect_ok=False)
    # Nothing to delete (the create undid itself) or a delete that finishes the job.
    assert r.returncode == 0 or "alice" in r.stderr.decode(), r.stderr.decode()
    assert p.leftovers("alice", sub="alice") == [], p.describe("alice")


# --------------------------------------------------------------------------
# Bad input: refused with a clear message, nothing made


BAD = [
    # (what, login, --id, --subdomain, words the message must contain)
    ("id with a path", "alice", "../x", "alice", ["../x"]),
    ("id with a slash", "alice", "a/b", "alice", ["a/b"]),
    ("subdomain with a dot", "alice", "alice", "a.b", ["a.b"]),
    ("subdomain of 64 characters", "alice", "alice", "a" * 64, ["subdomain"]),
    ("subdomain with a space", "alice", "alice", "a b", ["subdomain"]),
    ("LDAP filter in the login", "*)(uid=*", "x", "x", ["*)(uid=*"]),
    ("LDAP wildcard login", "*", "x", "x", ["*"]),
    ("login with a path", "../alice", "x", "x", ["../alice"]),
    ("person not in the directory", "dave", "dave", "dave", ["dave"]),
]


@pytest.mark.parametrize("what,login,ident,sub,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_clearly_and_makes_nothing(pplatform_noimage, what, login, ident,
                                                         sub, words):
    p = pplatform_noimage
    zone_before = p.bed.named.records(pv.ZONE)
    r = p.admin("user", "create", login, "--id", ident, "--subdomain", sub,
                "--ssh-key", p.bed.keys.pub("alice"))
    pv.skip_if_not_yet(r, "user create")
    err = assert_refused(r, *words)
    assert len(err.strip().splitlines()) <= 20, "not a clear message: %r" % err
    assert p.registry_logins() == []
    assert os.listdir(p.image_dir) == []
    assert pv.mounts_under(p.root) == []
    assert pv.loops_gone(p.image_dir) == {}
    assert p.bed.engine.containers() == []
    assert p.bed.named.records(pv.ZONE) == zone_before
    assert not os.path.exists(os.path.join(p.root, "x")), "'../x' made a file"


def test_a_bad_ssh_key_file_is_refused_and_makes_nothing(pplatform_noimage, tmp_path):
    p = pplatform_noimage
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 AAAA\x01\x02 not-a-key\n")
    r = p.admin("user", "create", "alice", "--id", "alice", "--subdomain", "alice",
                "--ssh-key", str(bad))
    assert_refused(r, "key")
    assert p.leftovers("alice", sub="alice") == []
