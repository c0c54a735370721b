"""A person's box end to end (issue 4, SPEC.md section 6): `semail-admin user
create alice --id alice --subdomain alice --ssh-key alice.pub` gives her MX
and SPF records at the platform's named, an ext4 image on a loop device
mounted at mail_root/alice and owned by her uid, and a container
semail-alice whose sshd lets her in with her key, where mutt reads the mail
that semail-inbound delivered a moment before. What she writes in ~/mail
is hers on the host; she sees nobody else's mail and nothing of the host's.

The tests share one platform (alice and bob, one message each) made once
for the module and only look at it; the tests that change a box (keys, a
full filesystem, delete, export) are in test_provision_lifecycle.py."""

import mailbox
import os
import re

import pytest

import provision_it as pv
import semail_it as it

ALICE = "alice@alice.semail.test"
BOB = "bob@bob.semail.test"


@pytest.fixture(scope="module")
def shared(tmp_path_factory, prov_bed, user_image):
    prov_bed.require("engine", "named")
    pv.require("provision", "storage", "dns", "container")
    p = pv.ProvPlatform(tmp_path_factory.mktemp("shared-box"), prov_bed)
    srv = None
    try:
        srv = it.Server(p, name="inbound").start()
        alice = pv.make_box(p, "alice", "alice")
        bob = pv.make_box(p, "bob", "bob")
        msgs = {}
        for box, rcpt, secret in ((alice, ALICE, "for-alice-only"), (bob, BOB, "bob-secret")):
            r, final, msg = pv.deliver(p.port, rcpt, "Welcome %s" % box.login,
                                       body="%s\n" % secret)
            assert r.code == 250 and final is not None and final.code == 250, (rcpt, r, final)
            msgs[box.login] = msg
        yield {"platform": p, "alice": alice, "bob": bob, "msgs": msgs, "inbound": srv}
    finally:
        try:
            if srv is not None:
                srv.stop()
        finally:
            errors = p.cleanup()
    assert not errors, errors


def test_create_adds_mx_and_spf_at_the_platforms_named(shared):
    named = shared["platform"].bed.named
    assert named.dig("alice.semail.test", "MX").strip() == "10 %s." % pv.MX_HOST
    assert named.dig("alice.semail.test", "TXT").strip() == '"v=spf1 mx -all"'
    assert named.dig("bob.semail.test", "MX").strip() == "10 %s." % pv.MX_HOST


def test_user_show_json_tells_address_uid_port_state(shared):
    info = shared["alice"].info
    assert info["login"] == "alice"
    assert info["address"] == ALICE
    assert isinstance(info["uid"], int) and info["uid"] > 0
    assert info["state"] == "active"
    low, high = shared["platform"].port_range
    assert low <= info["ssh_port"] <= high, (info["ssh_port"], shared["platform"].port_range)
    assert shared["bob"].uid != info["uid"]


def test_the_filesystem_is_an_ext4_image_on_a_loop_device_owned_by_her(shared):
    p, alice = shared["platform"], shared["alice"]
    mp = p.mount_point("alice")
    m = pv.mount_at(mp)
    assert m is not None, "nothing mounted at %s\n%s" % (mp, p.describe("alice"))
    assert m[2] == "ext4", m
    assert re.match(r"^/dev/loop\d+$", m[3]), m
    assert pv.loops_backing(p.image_path("alice")) == {m[3]: p.image_path("alice")}
    assert {"nosuid", "nodev"} <= m[4], m[4]
    st = os.stat(mp)
    assert st.st_uid == alice.uid, "mail_root/alice owned by %d, not by %d" % (st.st_uid,
                                                                               alice.uid)
    assert os.stat(p.image_path("alice")).st_size == 64 << 20     # [storage] default_size
    # Her filesystem is not bob's.
    assert pv.mount_at(p.mount_point("bob"))[1] != m[1]


def test_the_container_runs_with_limits_and_no_privileges(shared):
    p, alice = shared["platform"], shared["alice"]
    c = p.bed.engine.inspect("semail-alice")
    assert c is not None, p.bed.engine.container_names()
    assert c["State"]["Running"], c["State"]
    hc = c["HostConfig"]
    assert hc["Privileged"] is False
    assert hc["RestartPolicy"]["Name"] in ("unless-stopped", "always"), hc["RestartPolicy"]
    assert hc["Memory"] == 256 << 20, hc["Memory"]
    assert hc["PidsLimit"] == 256, hc["PidsLimit"]
    assert hc["NanoCpus"] == 500000000, hc["NanoCpus"]
    assert "ALL" in [x.upper() for x in (hc.get("CapDrop") or [])], hc.get("CapDrop")
    assert any("no-new-privileges" in s for s in (hc.get("SecurityOpt") or [])), \
        hc.get("SecurityOpt")
    assert c["Config"]["Labels"].get("semail.user") == "alice", c["Config"]["Labels"]
    bindings = hc["PortBindings"]["22/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(alice.port)}], bindings
    mounts = {m["Destination"]: m for m in c["Mounts"]}
    mail = mounts.get("/home/alice/mail")
    assert mail is not None, sorted(mounts)
    assert mail["Source"] == p.mount_point("alice") and mail["RW"] is True, mail


def test_ssh_with_her_key_lands_her_in_her_container_as_her_uid(shared):
    alice = shared["alice"]
    out = alice.sh("id -un; id -u; echo $HOME; hostname; test -d ~/mail && echo mail-ok")
    lines = out.split()
    assert lines[0] == "alice" and int(lines[1]) == alice.uid, out
    assert lines[2] == "/home/alice", out
    assert "mail-ok" in lines, out


def test_other_keys_and_other_users_are_refused(shared):
    alice, bob = shared["alice"], shared["bob"]
    p = pv.ssh(alice.port, "alice", bob.key, "true", timeout=30)
    assert p.returncode == 255 and b"Permission denied" in p.stderr, p
    p = pv.ssh(alice.port, "bob", bob.key, "true", timeout=30)
    assert p.returncode == 255, p
    p = pv.ssh(alice.port, "root", alice.key, "true", timeout=30)
    assert p.returncode == 255, p


def test_mutt_in_the_container_reads_the_message_semail_inbound_delivered(shared):
    alice = shared["alice"]
    got = pv.mutt_in_container(alice.port, "alice", alice.key)
    assert len(got) == 1, "mutt piped %d messages: %r" % (len(got), got)
    assert got[0].startswith(b"From sender@example.org "), got[0][:100]
    assert got[0].rstrip(b"\n").endswith(shared["msgs"]["alice"].rstrip(b"\n")), got[0][-400:]
    # And plain grep sees it, in the file mutt read.
    assert alice.sh("grep -c '^Subject: Welcome alice$' ~/mail/INBOX").strip() == "1"


def test_pythons_mailbox_on_the_host_reads_the_same_message(shared):
    p = shared["platform"]
    box = mailbox.mbox(p.box("alice"), create=False)
    try:
        msgs = list(box)
    finally:
        box.close()
    assert len(msgs) == 1
    assert msgs[0]["Subject"] == "Welcome alice"
    assert msgs[0].get_payload() == "for-alice-only\n"
    assert os.stat(p.box("alice")).st_uid == shared["alice"].uid


def test_a_file_written_in_mail_from_inside_is_hers_on_the_host(shared):
    p, alice = shared["platform"], shared["alice"]
    alice.sh("echo written-inside > ~/mail/notes.txt")
    path = os.path.join(p.mount_point("alice"), "notes.txt")
    with open(path) as f:
        assert f.read() == "written-inside\n"
    assert os.stat(path).st_uid == alice.uid


def test_the_container_sees_her_mail_only_and_nothing_of_the_host(shared):
    p, alice = shared["platform"], shared["alice"]
    # No way to the host's mail root, nor to bob's box.
    for path in (p.mail_root, p.mount_point("bob"), "/home/bob", p.root, p.state_dir):
        r = alice.ssh("ls -d %s" % path)
        assert r.returncode != 0, "%s is visible in alice's container: %s" % (path, r.stdout)
    assert alice.sh("ls /home").split() == ["alice"]
    # The only mount of a box file system in her container is her own.
    alice_dev = os.stat(p.mount_point("alice")).st_dev
    bob_dev = os.stat(p.mount_point("bob")).st_dev
    majmin = lambda d: "%d:%d" % (os.major(d), os.minor(d))
    inside = [l.split() for l in alice.sh("cat /proc/self/mountinfo").splitlines()]
    devs = {f[4]: f[2] for f in inside}
    assert devs.get("/home/alice/mail") == majmin(alice_dev), devs
    assert majmin(bob_dev) not in devs.values(), "bob's file system is mounted in alice's: %r" \
        % devs
    assert [m for m, d in devs.items() if d == majmin(alice_dev)] == ["/home/alice/mail"], devs
    # No privileges: no capabilities, no new privileges, not root.
    status = alice.sh("grep -E '^(CapEff|CapPrm|NoNewPrivs):' /proc/self/status")
    assert re.search(r"CapEff:\s+0+\n", status), status
    assert re.search(r"NoNewPrivs:\s+1", status), status
    r = alice.ssh("mkdir -p /tmp/m && mount -t tmpfs none /tmp/m")
    assert r.returncode != 0
    # Bob's secret is in nothing mounted into her container (the image itself
    # was made before any mail existed).
    r = alice.ssh("awk '{print $5}' /proc/self/mountinfo | grep -vE '^/(proc|sys|dev)?(/|$)' "
                  "| while read m; do grep -rsl bob-secret \"$m\"; done; "
                  "grep -rsl bob-secret /tmp /home", timeout=120)
    assert r.stdout.strip() == b"", "bob's mail is readable in alice's container: %r" % r.stdout


def test_mail_to_her_address_goes_to_her_box_only(shared):
    p = shared["platform"]
    assert [m.header_value("Subject") for m in p.messages("alice")] == ["Welcome alice"]
    assert [m.header_value("Subject") for m in p.messages("bob")] == ["Welcome bob"]


def test_the_image_has_the_mail_readers_and_every_box_its_own_host_key(shared):
    alice, bob = shared["alice"], shared["bob"]
    assert alice.sh("command -v mutt neomutt apt-get; test -x /usr/sbin/sshd && echo sshd"
                    ).split() == ["/usr/bin/mutt", "/usr/bin/neomutt", "/usr/bin/apt-get", "sshd"]
    # No host key baked into the image: each container has its own.
    assert alice.sh("ls /etc/ssh/ | grep -c '^ssh_host_.*_key$' || true").strip() == "0"

    def host_keys(port):
        p = it.run(["ssh-keyscan", "-T", "10", "-p", str(port), "127.0.0.1"], timeout=30)
        keys = sorted(l.split(None, 1)[1] for l in p.stdout.decode().splitlines()
                      if l and not l.startswith("#"))
        assert keys, "ssh-keyscan -p %d: %s" % (port, p.stderr.decode())
        return keys
    assert set(host_keys(alice.port)).isdisjoint(host_keys(bob.port))
