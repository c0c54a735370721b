"""Around the box (issue 4): an own domain is recorded and `dns check`
follows what its zone says; after a simulated reboot (engine stopped, every
filesystem unmounted, engine started again) `semail-admin mount-all` brings
every filesystem and container back, and the containers see the mail."""

import os


import provision_it as pv
import semail_it as it

OWN = pv.OWN_DOMAIN


def dns_check(p, domain):
    r = p.admin("dns", "check", domain)
    pv.skip_if_not_yet(r, "dns check")
    return r.returncode, (r.stdout + r.stderr).decode()


def test_an_own_domain_is_recorded_and_dns_check_follows_the_zone(pplatform, pinbound):
    p = pplatform
    pv.require("dns check")
    named = p.bed.named
    zone_before = named.records(pv.ZONE)
    r = p.create("alice", domain=OWN)
    assert "alice@%s" % OWN in r.stdout.decode(), r.stdout.decode()
    assert p.show("alice")["address"] == "alice@" + OWN
    # Nothing is added to the platform's zone for an own domain.
    assert named.records(pv.ZONE) == zone_before
    # Mail to the own domain's address is accepted at once.
    rr, final, _ = pv.deliver(p.port, "alice@" + OWN, "to the own domain")
    assert final is not None and final.code == 250, (rr, final)
    # No MX yet: not pointing here.
    rc, out = dns_check(p, OWN)
    assert rc != 0 and OWN in out, (rc, out)
    # The person adds the MX to the platform: pointing here.
    assert named.update(OWN, "add %s. 60 MX 10 %s." % (OWN, pv.MX_HOST))[0] == 0
    rc, out = dns_check(p, OWN)
    assert rc == 0, "dns check says %r (exit %d) with MX -> %s" % (out, rc, pv.MX_HOST)
    # An MX elsewhere: not pointing here.
    assert named.update(OWN, "delete %s. MX" % OWN,
                        "add %s. 60 MX 10 mx.elsewhere.example." % OWN)[0] == 0
    rc, out = dns_check(p, OWN)
    assert rc != 0 and "elsewhere" in out, (rc, out)
    # Delete: the own domain's records are the person's, left alone.
    p.delete("alice")
    assert named.dig(OWN, "MX").strip() == "10 mx.elsewhere.example."
    assert p.leftovers("alice") == [], p.describe("alice")


def test_dns_check_of_a_domain_without_records(pplatform):
    p = pplatform
    pv.require("dns check")
    rc, out = dns_check(p, "nothing-here." + OWN)
    assert rc != 0 and "nothing-here" in out, (rc, out)
    assert it.sanitizer_report(out) is None


def test_mount_all_after_a_simulated_reboot_brings_everything_back(pplatform, pinbound):
    p = pplatform
    pv.require("mount-all")
    engine = p.bed.engine
    infos = {}
    for login in ("alice", "bob"):
        p.create(login, key=login)
        r, final, _ = pv.deliver(p.port, "%s@%s.semail.test" % (login, login), "before reboot")
        assert final is not None and final.code == 250
        infos[login] = p.show(login)
    # "Reboot": the engine goes down with its containers, every file system
    # is unmounted (loop devices detach), then the engine comes back.
    engine.stop()
    for login in infos:
        r = it.run(["umount", p.mount_point(login)], timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        assert pv.mount_at(p.mount_point(login)) is None
        assert pv.loops_gone(p.image_path(login), timeout=15.0) == {}, p.describe(login)
    engine.start()
    r = p.admin("mount-all", timeout=300)
    pv.skip_if_not_yet(r, "mount-all")
    assert r.returncode == 0, "mount-all failed (%d): %s%s" % (r.returncode, r.stdout.decode(),
                                                                r.stderr.decode())
    for login, info in infos.items():
        m = pv.mount_at(p.mount_point(login))
        assert m is not None and m[2] == "ext4", (login, p.describe(login))
        c = engine.inspect("semail-" + login)
        assert c is not None and c["State"]["Running"], (login, c and c["State"])
        port = p.show(login)["ssh_port"]
        key = p.bed.keys.path(login)
        pv.wait_ssh(port, login, key, diag=lambda: p.describe(login))
        # The container sees the mounted file system, not the empty mount point.
        out = pv.ssh(port, login, key, "grep -c '^Subject: before reboot$' ~/mail/INBOX")
        if out.stdout.decode().strip() != "1":
            seen = pv.ssh(port, login, key, "stat -c '%u:%g %a' ~/mail; ls -a ~/mail")
            host = os.stat(p.mount_point(login))
            raise AssertionError(
                "%s's container does not see her file system after mount-all: %r %r\n"
                "~/mail inside: %r; mail_root/%s on the host: %d:%d %o; the container "
                "started at %s (the engine restarts it before mount-all mounts)"
                % (login, out.stdout, out.stderr, seen.stdout.decode(), login, host.st_uid,
                   host.st_gid, host.st_mode & 0o7777,
                   engine.inspect("semail-" + login)["State"]["StartedAt"]))
    # And the mail flows again.
    r, final, _ = pv.deliver(p.port, "alice@alice.semail.test", "after reboot")
    assert final is not None and final.code == 250
    assert [m.header_value("Subject") for m in p.messages("alice")] == ["before reboot",
                                                                         "after reboot"]


def test_mount_all_twice_changes_nothing(pplatform):
    p = pplatform
    pv.require("mount-all")
    p.create("alice")
    before = (pv.mount_at(p.mount_point("alice")),
              p.bed.engine.inspect("semail-alice")["State"]["StartedAt"])
    for _ in range(2):
        r = p.admin("mount-all", timeout=300)
        pv.skip_if_not_yet(r, "mount-all")
        assert r.returncode == 0, r.stderr.decode()
    after = (pv.mount_at(p.mount_point("alice")),
             p.bed.engine.inspect("semail-alice")["State"]["StartedAt"])
    assert after == before
    assert len([m for m in pv.mountinfo() if m[0] == os.path.realpath(p.mount_point("alice"))]) \
        == 1, "mount-all stacked a second mount"
