"""The test bed of the provisioning tests, checked on its own (these run
whether or not the provisioning pieces of SEMail are built): the session's
dockerd answers and runs a container whose published port answers on
loopback, named takes TSIG-signed updates and refuses unsigned ones, slapd
binds, ssh keys are made, a loop device can be attached, and the "no free
loop device" injection really makes LOOP_CTL_GET_FREE fail. A failure here
is the test bed's, not SEMail's."""

import http.client
import os
import shutil
import tarfile

import pytest

import provision_it as pv
import semail_it as it


def test_engine_answers_ping(prov_bed):
    assert "engine" not in prov_bed.errors, prov_bed.errors["engine"]
    assert prov_bed.engine.ping()
    status, body = prov_bed.engine.request("GET", "/version")
    assert status == 200, body
    assert b'"ApiVersion"' in body


def test_engine_runs_a_container_with_a_port_published_on_loopback(prov_bed, tmp_path):
    assert "engine" not in prov_bed.errors, prov_bed.errors["engine"]
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.skip("busybox not installed (Debian package busybox-static): no probe image")
    e = prov_bed.engine
    tar = str(tmp_path / "probe.tar")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("semail probe\n")
    with tarfile.open(tar, "w") as t:
        t.add(busybox, arcname="bin/busybox")
        t.add(str(www), arcname="www")
    e.import_tar(tar, "semail-probe")
    port = it.free_port()
    name = "semail-probe-%d" % os.getpid()
    try:
        e.run_probe(name, "semail-probe:latest",
                    ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
                    port_bindings={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
                    exposed={"80/tcp": {}})
        info = e.inspect(name)
        assert info["State"]["Running"], info["State"]
        assert info["HostConfig"]["Memory"] == 64 << 20

        def get():
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/index.html")
                return c.getresponse().read()
            except OSError:
                return None
        body = pv.wait_until(get, 20, "the probe's published port %d" % port)
        assert body == b"semail probe\n"
    finally:
        e.remove(name)
        e.request("DELETE", "/images/semail-probe:latest?force=1")
    assert e.inspect(name) is None


def test_named_takes_tsig_updates_and_refuses_unsigned_ones(prov_bed):
    assert "named" not in prov_bed.errors, prov_bed.errors["named"]
    n = prov_bed.named
    name = "probe-%d.%s" % (os.getpid(), pv.ZONE)
    assert n.status(name, "MX") == "NXDOMAIN"
    rc, out = n.update(pv.ZONE, "add %s. 60 MX 10 %s." % (name, pv.MX_HOST),
                       'add %s. 60 TXT "v=spf1 mx -all"' % name)
    assert rc == 0, out
    try:
        assert n.dig(name, "MX").strip() == "10 %s." % pv.MX_HOST
        assert n.dig(name, "TXT").strip() == '"v=spf1 mx -all"'
        assert (name + ".", "MX", "10 %s." % pv.MX_HOST) in n.records(pv.ZONE)
        # Without the key: refused.
        script = "server 127.0.0.1 %d\nzone %s\nupdate delete %s.\nsend\n" % (
            n.port, pv.ZONE, name)
        p = it.subprocess.run(["nsupdate", "-t", "10"], input=script.encode(),
                              stdout=it.subprocess.PIPE, stderr=it.subprocess.PIPE, timeout=30)
        assert p.returncode != 0 and b"REFUSED" in p.stdout + p.stderr, p
        assert n.status(name, "MX") == "NOERROR"
    finally:
        rc, out = n.update(pv.ZONE, "delete %s." % name)
    assert rc == 0, out
    assert n.status(name, "MX") == "NXDOMAIN"


def test_named_restarts_on_the_same_port_with_its_updates(prov_bed):
    assert "named" not in prov_bed.errors, prov_bed.errors["named"]
    n = prov_bed.named
    name = "restart-%d.%s." % (os.getpid(), pv.ZONE)
    rc, out = n.update(pv.ZONE, "add %s 60 MX 10 %s." % (name, pv.MX_HOST))
    assert rc == 0, out
    try:
        with pv.stopped(n):
            assert n.status(name, "MX") == "NO-ANSWER"
        assert n.dig(name, "MX").strip() == "10 %s." % pv.MX_HOST
    finally:
        n.update(pv.ZONE, "delete " + name)


def test_slapd_binds_alice_and_bob(prov_bed):
    s = prov_bed.slapd
    assert s.whoami("alice", "alice-Secret1") == 0
    assert s.whoami("bob", "bob-Secret2") == 0
    assert s.whoami("alice", "wrong") == 49


def test_ssh_keys_are_made_per_run(prov_bed):
    text = prov_bed.keys.pub_text("probe")
    assert text.startswith("ssh-ed25519 ")
    assert os.stat(prov_bed.keys.path("probe")).st_mode & 0o077 == 0


def test_a_loop_device_can_be_attached(prov_bed, tmp_path):
    img = str(tmp_path / "probe.img")
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    p = it.run(["losetup", "-f", "--show", img], timeout=30)
    assert p.returncode == 0, "no loop device can be attached: %s" % p.stderr.decode()
    dev = p.stdout.decode().strip()
    try:
        assert pv.loops_backing(img) == {dev: img}
    finally:
        assert it.run(["losetup", "-d", dev], timeout=30).returncode == 0
    assert pv.loops_gone(img) == {}


def test_the_no_loop_device_injection_makes_get_free_fail(prov_bed, tmp_path):
    img = str(tmp_path / "probe.img")
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    p = it.run(pv.no_loop_device_wrap() + ["losetup", "-f", "--show", img], timeout=30)
    if p.returncode == 0:
        it.run(["losetup", "-d", p.stdout.decode().strip()], timeout=30)
    assert p.returncode != 0, "losetup still found a loop device: %s" % p.stdout.decode()
    assert pv.loops_gone(img) == {}
    # The host's /dev/loop-control is untouched.
    assert os.path.exists("/dev/loop-control")
    assert not any(m[0] == "/dev/loop-control" for m in pv.mountinfo())


def test_engine_stops_and_starts_again_on_the_same_socket(prov_bed):
    assert "engine" not in prov_bed.errors, prov_bed.errors["engine"]
    e = prov_bed.engine
    with pv.stopped(e):
        assert not e.ping()
        assert not os.path.exists(e.sock)
    assert e.ping()
