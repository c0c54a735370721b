"""Helpers for the provisioning integration tests (issue 4, SPEC.md section 6):
the real parts around `semail-admin user create/delete`, each started by the
tests, bounded in time, on loopback only, and always cleaned up.

- `Engine`: a Docker engine of the test session's own (`dockerd` with its own
  socket, data root, exec root and a bridge of its own, so that published SSH
  ports reach the containers through the engine's loopback proxy), plus a
  small Engine API client over the UNIX socket (inspect, list, remove).
- `DynNamed`: BIND9 primary for `semail.test` and `example.test`, both
  updatable with a TSIG key made by `tsig-keygen` (what `[dns]` points at),
  zone transfers allowed on loopback so that a test can compare the whole
  zone before and after.
- `SshKeys` / `Ssh`: ed25519 key pairs made per run and an `ssh` client that
  never reads the host's configuration or known hosts.
- `build_user_image`: `semail-admin image build` once per session into the
  session's engine, holding CACHE_DIR/lock (the lock of
  tests/unit/test_container.c) so that the bootstrap cache in CACHE_DIR is
  made once per machine and never by two builds at once.
- `ProvPlatform`: semail_it.Platform with `[storage] backend = image`,
  `[containers]`, `[dns]`, `[ldap]` and `[outbound] resolver` filled in, plus
  the probes every test uses to say what exists (registry record, image file,
  mount, loop device, container, DNS records, key directory) and a
  teardown that removes whatever a failed test left.
- Skips: `machine_skip_reason()` (not root, a program of the machine missing)
  and `pieces_missing()` (a part of SEMail not built yet), each with the
  exact reason.
"""

import contextlib
import fcntl
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import outbound_it as ot
import semail_it as it

CACHE_DIR = os.environ.get("SEMAIL_TEST_IMAGE_CACHE") or "/var/tmp/semail-test-image"
IMAGE = "semail/user:latest"
ZONE = "semail.test"
OWN_DOMAIN = "example.test"
MX_HOST = "mx.semail.test"
TSIG_NAME = "semail-update"
LDAP_BASE = ot.LDAP_BASE
API = "/v1.41"

# Debian packages behind each program the tests run.
MACHINE_PROGRAMS = [
    ("dockerd", "docker.io"), ("containerd", "docker.io"), ("runc", "docker.io"),
    ("named", "bind9"), ("tsig-keygen", "bind9"), ("dig", "bind9-dnsutils"),
    ("nsupdate", "bind9-dnsutils"), ("slapd", "slapd"), ("ldapwhoami", "ldap-utils"),
    ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"),
    ("losetup", "mount"), ("mkfs.ext4", "e2fsprogs"), ("unshare", "util-linux"),
    ("ip", "iproute2"),
]


# --------------------------------------------------------------------------
# What the machine can do, and which parts of SEMail exist


def machine_skip_reason():
    """Why this machine cannot run the provisioning tests, or None."""
    if os.geteuid() != 0:
        return "needs root: loop devices, mount(2), its own dockerd and bridge"
    missing = ["%s (Debian package %s)" % (p, pkg) for p, pkg in MACHINE_PROGRAMS
               if not shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]
    if missing:
        return "programs missing on this machine: " + ", ".join(missing)
    if not os.path.exists("/dev/loop-control"):
        return "no loop device support: /dev/loop-control is missing"
    if not os.path.isdir("/sys/fs/cgroup"):
        return "no cgroup file system at /sys/fs/cgroup: dockerd cannot run containers"
    return None


def bootstrap_tool():
    for tool in ("mmdebstrap", "debootstrap"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            return tool
    return None


_help_text = None


def admin_help():
    """`semail-admin --help` (stdout and stderr), read once."""
    global _help_text
    if _help_text is None:
        p = it.run([it.ADMIN, "--help"], timeout=30)
        _help_text = (p.stdout + p.stderr).decode("utf-8", "replace")
    return _help_text


_symbols = None


def library_symbols():
    """The dynamic symbols libsemail (as semail-admin loads it) defines."""
    global _symbols
    if _symbols is not None:
        return _symbols
    lib = None
    p = it.run(["ldd", it.ADMIN], timeout=30)
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        m = re.search(r"libsemail\.so\S*\s+=>\s+(\S+)", line)
        if m:
            lib = m.group(1)
    target = lib or it.ADMIN       # statically linked: the program holds them
    p = it.run(["nm", "-D", "--defined-only", target], timeout=30)
    if p.returncode != 0 or not p.stdout:
        p = it.run(["nm", "--defined-only", target], timeout=30)
    lines = p.stdout.decode("utf-8", "replace").splitlines()
    _symbols = set(l.split()[-1].split("@")[0] for l in lines if l.strip())
    return _symbols


# The pieces of SEMail the tests need: (name, how to tell, what the skip says).
PIECES = {
    "provision": ("symbol", "semail_provision_create",
                  "libsemail has no provisioning transactions yet (no semail_provision_create; "
                  "include/semail/provision.h)"),
    "container": ("symbol", "semail_container_create",
                  "libsemail has no container module yet (no semail_container_create; "
                  "include/semail/container.h)"),
    "storage": ("symbol", "semail_storage_create",
                "libsemail has no storage backends (no semail_storage_create)"),
    "dns": ("symbol", "semail_dns_updater_new",
            "libsemail has no DNS updates (no semail_dns_updater_new)"),
    "image build": ("help", "image build", "semail-admin has no `image build` command yet"),
    "mount-all": ("help", "mount-all", "semail-admin has no `mount-all` command yet"),
    "user keys": ("help", "user keys", "semail-admin has no `user keys` command yet"),
    "user resize": ("help", "user resize", "semail-admin has no `user resize` command yet"),
    "user export": ("help", "user export", "semail-admin has no `user export` command yet"),
    "dns check": ("help", "dns check", "semail-admin has no `dns check` command yet"),
    "archive": ("help", "--archive", "semail-admin has no `user delete --archive` yet"),
}


def pieces_missing(*names):
    """The skip reason for the first of NAMES that is not built, or None."""
    for name in names:
        kind, what, reason = PIECES[name]
        if kind == "symbol" and what not in library_symbols():
            return "%s [%s]" % (reason, it.ADMIN)
        if kind == "help" and what not in admin_help():
            return "%s (its --help does not mention '%s') [%s]" % (reason, what, it.ADMIN)
    return None


def require(*names):
    reason = pieces_missing(*names)
    if reason:
        pytest.skip(reason)


# Messages by which semail-admin says a piece is not there yet.
NOT_YET_RE = re.compile(r"not implemented|unknown command|unknown \w+ command|"
                        r"built without", re.I)


def skip_if_not_yet(p, what):
    """Skip (exactly why) when semail-admin answered that WHAT does not exist yet."""
    err = p.stderr.decode("utf-8", "replace").strip()
    if p.returncode != 0 and NOT_YET_RE.search(err):
        pytest.skip("%s: semail-admin says: %s" % (what, err.splitlines()[-1] if err else "?"))


def wait_until(pred, timeout, what, diag=None, interval=0.1):
    return ot.wait_until(pred, timeout, what, diag, interval)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError):
        return ""


# --------------------------------------------------------------------------
# The Docker engine


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def _short_dir(prefix):
    """A short directory under /tmp: UNIX socket paths of the engine and
    containerd must stay under 108 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def _free_bridge():
    """A bridge name and a /24 that no interface of the machine uses."""
    p = it.run(["ip", "-o", "addr", "show"], timeout=10)
    used = p.stdout.decode()
    links = it.run(["ip", "-o", "link", "show"], timeout=10).stdout.decode()
    base = os.getpid() % 200
    for i in range(200):
        n = (base + i) % 200 + 20
        name = "sempt%d" % n
        net = "10.214.%d" % n
        if (" %s:" % name) not in links and (" %s." % net) not in used:
            return name, net
    raise RuntimeError("no free bridge name / subnet for the test engine")


class Engine:
    """dockerd of the test session: own socket, data root, exec root, pid
    file and bridge (`--iptables=false`: published ports go through the
    engine's userland proxy on loopback, no firewall rule is touched)."""

    def __init__(self):
        self.dir = _short_dir("sempt-")
        self.sock = os.path.join(self.dir, "docker.sock")
        self.data = os.path.join(self.dir, "data")
        self.exec_root = os.path.join(self.dir, "x")
        self.pidfile = os.path.join(self.dir, "docker.pid")
        self.log = os.path.join(self.dir, "dockerd.log")
        self.proc = None
        self.bridge = None
        self.frozen = False

    # -- life
    def _make_bridge(self):
        self.bridge, net = _free_bridge()
        for argv in (["ip", "link", "add", self.bridge, "type", "bridge"],
                     ["ip", "addr", "add", net + ".1/24", "dev", self.bridge],
                     ["ip", "link", "set", self.bridge, "up"]):
            p = it.run(argv, timeout=10)
            assert p.returncode == 0, "%s: %s" % (argv, p.stderr.decode())

    def start(self, timeout=60.0):
        if self.bridge is None:
            self._make_bridge()
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--host", "unix://" + self.sock, "--data-root", self.data,
             "--exec-root", self.exec_root, "--pidfile", self.pidfile,
             "--bridge", self.bridge, "--iptables=false", "--ip-masq=false",
             "--ip-forward=false", "--shutdown-timeout", "5", "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("dockerd exited with %d:\n%s"
                                     % (self.proc.returncode, read(self.log)[-4000:]))
            return self.ping()
        wait_until(ready, timeout, "dockerd to answer _ping on " + self.sock,
                   lambda: read(self.log)[-3000:], interval=0.1)
        return self

    def ping(self):
        try:
            status, body = self.request("GET", "/_ping", timeout=5)
        except OSError:
            return False
        return status == 200 and body == b"OK"

    def stop(self, timeout=60.0):
        """SIGTERM and wait: the engine stops its containers first."""
        if self.proc is None:
            return
        if self.frozen:
            self.thaw()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()
        self.proc = None
        # containerd, started by dockerd, goes with it; wait for the socket to go.
        wait_until(lambda: not os.path.exists(self.sock), 15, "dockerd's socket to go")

    def freeze(self):
        """SIGSTOP: the socket still accepts, requests hang (a stuck engine)."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def close(self):
        """Stop the engine, remove what it left (mounts, bridge, directory)."""
        try:
            if self.running():
                for c in self.containers():
                    self.remove(c["Id"])
            self.stop()
        finally:
            for mnt in reversed(mounts_under(self.dir)):
                it.run(["umount", "-l", mnt], timeout=30)
            if self.bridge:
                it.run(["ip", "link", "del", self.bridge], timeout=10)
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- Engine API
    def request(self, method, path, body=None, timeout=30, headers=None):
        conn = _UnixHTTPConnection(self.sock, timeout)
        try:
            hdrs = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, (API + path) if path != "/_ping" else path, body=body,
                         headers=hdrs)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def inspect(self, name):
        """The container's JSON, or None when there is none."""
        status, body = self.request("GET", "/containers/%s/json" % name)
        if status == 404:
            return None
        assert status == 200, "inspect %s: %d %r" % (name, status, body[:300])
        return json.loads(body)

    def containers(self, label="semail.user"):
        q = json.dumps({"label": [label]}) if label else "{}"
        status, body = self.request(
            "GET", "/containers/json?all=1&filters=" + urlquote(q))
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def container_names(self):
        return sorted(n.lstrip("/") for c in self.containers(label=None) for n in c["Names"])

    def remove(self, name):
        status, body = self.request("DELETE", "/containers/%s?force=1&v=1" % name, timeout=60)
        assert status in (204, 404), "remove %s: %d %r" % (name, status, body[:300])

    def has_image(self, name=IMAGE):
        status, _ = self.request("GET", "/images/%s/json" % urlquote(name))
        return status == 200

    def import_tar(self, tar_path, repo, tag="latest", changes=()):
        q = "fromSrc=-&repo=%s&tag=%s" % (urlquote(repo), tag)
        for c in changes:
            q += "&changes=" + urlquote(c)
        with open(tar_path, "rb") as f:
            status, body = self.request("POST", "/images/create?" + q, body=f, timeout=300,
                                        headers={"Content-Type": "application/x-tar"})
        assert status == 200 and b"error" not in body.lower(), (status, body[-500:])

    def run_probe(self, name, image, cmd, port_bindings=None, exposed=None):
        spec = {"Image": image, "Cmd": cmd, "Labels": {"semail.probe": "1"},
                "ExposedPorts": exposed or {},
                "HostConfig": {"PortBindings": port_bindings or {}, "Memory": 64 << 20,
                               "PidsLimit": 64}}
        status, body = self.request("POST", "/containers/create?name=" + name, body=spec)
        assert status == 201, (status, body)
        status, body = self.request("POST", "/containers/%s/start" % name)
        assert status == 204, (status, body)


def urlquote(s):
    from urllib.parse import quote
    return quote(s, safe="")


# --------------------------------------------------------------------------
# BIND9 with dynamic zones and TSIG


class DynNamed:
    """named -g, primary for semail.test and example.test on 127.0.0.1:PORT
    (and [::1]:PORT), updatable with the TSIG key `semail-update`."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.port = ot.free_port()
        self.conf = os.path.join(self.root, "named.conf")
        self.key = os.path.join(self.root, "tsig.key")
        self.log = os.path.join(self.root, "named.stderr")
        self.proc = None
        p = it.run(["tsig-keygen", "-a", "hmac-sha256", TSIG_NAME], timeout=30)
        assert p.returncode == 0, p.stderr.decode()
        with open(self.key, "wb") as f:
            f.write(p.stdout)
        os.chmod(self.key, 0o600)
        zones = {
            ZONE: ["mx IN A 127.0.0.1", "mx IN AAAA ::1", "@ IN MX 10 mx"],
            OWN_DOMAIN: ["www IN A 127.0.0.1"],
        }
        zone_conf = []
        for zone, records in zones.items():
            path = os.path.join(self.root, zone + ".zone")
            with open(path, "w") as f:
                f.write("$TTL 60\n@ IN SOA ns.%s. hostmaster.%s. ( 1 3600 600 86400 60 )\n"
                        "@ IN NS ns\nns IN A 127.0.0.1\n%s\n" % (zone, zone, "\n".join(records)))
            zone_conf.append('zone "%s" { type primary; file "%s"; '
                             'update-policy { grant %s zonesub ANY; }; '
                             'allow-transfer { 127.0.0.1; ::1; }; };' % (zone, path, TSIG_NAME))
        with open(self.conf, "w") as f:
            f.write("""include "%(key)s";
options {
  directory "%(d)s"; pid-file "%(d)s/named.pid";
  session-keyfile "%(d)s/session.key"; managed-keys-directory "%(d)s";
  listen-on port %(p)d { 127.0.0.1; }; listen-on-v6 port %(p)d { ::1; };
  recursion no; dnssec-validation no; notify no; allow-query { any; };
};
controls { };
%(zones)s
""" % {"key": self.key, "d": self.root, "p": self.port, "zones": "\n".join(zone_conf)})

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=30.0):
        p = it.run(["named-checkconf", self.conf], timeout=30)
        assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
        self._err = open(self.log, "ab")
        self.proc = subprocess.Popen(["named", "-g", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("named exited with %d:\n%s" % (self.proc.returncode,
                                                                      read(self.log)[-4000:]))
            return all(self.status(z, "SOA") == "NOERROR" for z in (ZONE, OWN_DOMAIN))
        wait_until(ready, timeout, "named to answer the SOA of its zones",
                   lambda: read(self.log)[-3000:])
        return self

    def stop(self):
        if self.proc is None:
            return
        try:
            ot.stop_process(self.proc, "named")
        finally:
            self._err.close()
            self.proc = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def dig(self, name, rtype, short=True):
        argv = ["dig", "@127.0.0.1", "-p", str(self.port), "+time=2", "+tries=2", name, rtype]
        if short:
            argv.insert(1, "+short")
        return it.run(argv, timeout=20).stdout.decode()

    def status(self, name, rtype):
        m = re.search(r"status: (\w+)", self.dig(name, rtype, short=False))
        return m.group(1) if m else "NO-ANSWER"

    def records(self, zone=ZONE):
        """Every record of ZONE but its SOA, by zone transfer: a set of
        (owner, type, data) with lower-case names."""
        p = it.run(["dig", "@127.0.0.1", "-p", str(self.port), "+time=2", "+tries=2",
                    "+nocmd", "+nostats", "+nocomments", "+noquestion", zone, "AXFR"],
                   timeout=30)
        out = set()
        for line in p.stdout.decode().splitlines():
            f = line.split(None, 4)
            if len(f) == 5 and not line.startswith(";") and f[3] != "SOA":
                out.add((f[0].lower(), f[3], f[4]))
        assert out, "zone transfer of %s failed: %s%s" % (zone, p.stdout.decode()[-500:],
                                                          p.stderr.decode())
        return out

    def names(self, zone=ZONE):
        return {r[0] for r in self.records(zone)}

    def update(self, zone, *lines):
        """nsupdate -k KEY: each of LINES ("add NAME TTL TYPE DATA", "delete NAME")."""
        script = "server 127.0.0.1 %d\nzone %s\n" % (self.port, zone)
        script += "".join("update %s\n" % l for l in lines) + "send\n"
        p = subprocess.run(["nsupdate", "-k", self.key, "-t", "10"], input=script.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        return p.returncode, (p.stdout + p.stderr).decode()


# --------------------------------------------------------------------------
# SSH


class SshKeys:
    """ed25519 key pairs made for this run: `path(name)`, `pub(name)`."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)

    def path(self, name):
        key = os.path.join(self.root, name)
        if not os.path.exists(key):
            p = it.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                        "%s@semail-tests" % name, "-f", key], timeout=30)
            assert p.returncode == 0, p.stderr.decode()
        return key

    def pub(self, name):
        return self.path(name) + ".pub"

    def pub_text(self, name):
        return read(self.pub(name))


def ssh(port, user, key, command, stdin=None, timeout=60, tty=False):
    """ssh -p PORT USER@127.0.0.1 COMMAND with KEY only, no host config,
    no known_hosts; returns the CompletedProcess (255: ssh itself failed)."""
    argv = ["ssh", "-F", "/dev/null", "-p", str(port), "-i", key,
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
    if tty:
        argv.append("-tt")
    argv += ["%s@127.0.0.1" % user, command]
    return subprocess.run(argv, input=stdin if stdin is not None else b"",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def wait_ssh(port, user, key, timeout=45.0, diag=None):
    """Poll until `ssh ... true` succeeds (sshd up, key accepted)."""
    last = [None]

    def ok():
        p = ssh(port, user, key, "true", timeout=20)
        last[0] = p
        return p.returncode == 0

    def why():
        p = last[0]
        text = "last ssh: rc=%s %s" % (p.returncode, p.stderr.decode()[-500:]) if p else ""
        return text + ("\n" + str(diag()) if diag else "")
    wait_until(ok, timeout, "ssh %s@127.0.0.1 -p %d to work" % (user, port), why, interval=0.3)


MUTT_SCRIPT = r"""set -e
W=$(mktemp -d)
printf '#!/bin/sh\ncat >> "%s/out"\n' "$W" > "$W/pipe.sh"
chmod 755 "$W/pipe.sh"
cat > "$W/muttrc" <<EOF
set folder="$HOME/mail"
set spoolfile="$HOME/mail/INBOX"
set record=""
set postponed=""
set wait_key=no
set pipe_split=yes
set pipe_decode=no
set pipe_sep="=MUTT-SEP=\n"
set sort=mailbox-order
push "<tag-pattern>~A<enter><tag-prefix><pipe-message>$W/pipe.sh<enter><exit>"
EOF
TERM=xterm script -qec "mutt -n -F $W/muttrc -R -f $HOME/mail/INBOX" /dev/null >/dev/null 2>&1 </dev/null
cat "$W/out"
rm -rf "$W"
"""


def mutt_in_container(port, user, key):
    """Make mutt (read-only) inside the container pipe every message of
    ~/mail/INBOX to a file; return the messages it handed over."""
    p = ssh(port, user, key, "bash -s", stdin=MUTT_SCRIPT.encode(), timeout=90)
    assert p.returncode == 0, "mutt in the container failed (%d): %s" % (
        p.returncode, p.stderr.decode()[-2000:])
    parts = p.stdout.split(b"=MUTT-SEP=\n")
    assert parts[-1] == b"", "mutt's output does not end with the separator: %r" % p.stdout[-300:]
    return parts[:-1]


# --------------------------------------------------------------------------
# The user image


def build_user_image(engine, platform):
    """`semail-admin image build` into ENGINE with PLATFORM's config, holding
    CACHE_DIR/lock. The command keeps its bootstrap cache in
    STATE_DIR/image-build; CACHE_DIR, the work directory that
    tests/unit/test_container.c gives semail_image_build() too, is
    bind-mounted there for the build (the command refuses a symbolic link),
    so that both reuse one `rootfs-SUITE.tar` and the bootstrap (a minute or
    two) happens once per machine. Returns (process, seconds)."""
    os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
    work = os.path.join(platform.state_dir, "image-build")
    os.makedirs(work, mode=0o700, exist_ok=True)
    lock = open(os.path.join(CACHE_DIR, "lock"), "a")
    mounted = False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = it.run(["mount", "--bind", CACHE_DIR, work], timeout=30)
        assert r.returncode == 0, "mount --bind %s %s: %s" % (CACHE_DIR, work, r.stderr.decode())
        mounted = True
        t = time.monotonic()
        p = platform.admin("image", "build", timeout=900)
        return p, time.monotonic() - t
    finally:
        if mounted:
            r = it.run(["umount", work], timeout=60)
            if r.returncode != 0:
                it.run(["umount", "-l", work], timeout=60)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


# --------------------------------------------------------------------------
# Mounts and loop devices


def mountinfo():
    """(mount point, major:minor, fstype, source, options) of this mount
    namespace; options are the per-mount ones plus the super block's."""
    out = []
    for line in read("/proc/self/mountinfo").splitlines():
        pre, _, post = line.partition(" - ")
        f = pre.split()
        g = post.split()
        point = f[4].replace("\\040", " ")
        opts = set(f[5].split(",")) | set(g[2].split(",") if len(g) > 2 else [])
        out.append((point, f[2], g[0] if g else "", g[1] if len(g) > 1 else "", opts))
    return out


def mounts_under(path):
    path = os.path.realpath(path).rstrip("/")
    return [m[0] for m in mountinfo() if m[0] == path or m[0].startswith(path + "/")]


def mount_at(path):
    """The mountinfo entry mounted at PATH, or None."""
    path = os.path.realpath(path)
    found = [m for m in mountinfo() if m[0] == path]
    return found[-1] if found else None


def loops_gone(prefix, timeout=3.0):
    """loops_backing(PREFIX) once the kernel has had up to TIMEOUT seconds to
    detach: an auto-clear loop device goes away asynchronously after its last
    user, later under load. {} when every one is gone."""
    end = time.monotonic() + timeout
    left = loops_backing(prefix)
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = loops_backing(prefix)
    return left


def loops_backing(prefix):
    """{'/dev/loopN': backing file} for loop devices whose file starts with PREFIX."""
    out = {}
    try:
        names = os.listdir("/sys/block")
    except FileNotFoundError:
        return out
    for n in names:
        if not n.startswith("loop"):
            continue
        f = read("/sys/block/%s/loop/backing_file" % n).strip()
        if f and f.startswith(prefix):
            out["/dev/" + n] = f
    return out


def free_port_range(count=20):
    """COUNT consecutive TCP ports free on 127.0.0.1 right now."""
    for _ in range(200):
        low = random.randrange(30000, 60000 - count)
        ok = True
        for port in range(low, low + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
                break
            finally:
                s.close()
        if ok:
            return low, low + count - 1
    raise RuntimeError("no free range of %d ports" % count)


# --------------------------------------------------------------------------
# The platform


class ProvPlatform(it.Platform):
    """A platform with every part of section 6 turned on: image storage,
    containers on the session's engine, DNS updates to the session's named,
    the session's slapd as directory."""

    def __init__(self, root, bed):
        self.bed = bed
        self.image_dir = os.path.join(str(root), "images")
        os.makedirs(self.image_dir, exist_ok=True)
        self.port_range = free_port_range()
        self.extra = {}
        self.logins = set()          # every login a test asked for (teardown)
        self.dns_baseline = {z: bed.named.records(z) for z in (ZONE, OWN_DOMAIN)}
        super().__init__(root)

    def config_text(self, inbound=None):
        text = super().config_text(inbound)
        # Replace the sections the base platform turns off.
        text = text.split("\n[storage]")[0]
        b = self.bed
        sections = {
            "storage": {"backend": "image", "image_dir": self.image_dir,
                        "default_size": "64M"},
            "containers": {"enabled": "yes", "engine": b.engine.sock, "image": IMAGE,
                           "ssh_listen": "127.0.0.1",
                           "ssh_port_range": "%d-%d" % self.port_range,
                           "memory": "256m", "pids": "256", "cpus": "0.5"},
            "dns": {"enabled": "yes", "server": b.named.server, "zone": ZONE,
                    "tsig_key": b.named.key, "mx_host": MX_HOST},
            "ldap": {"uri": b.slapd.uri, "base": LDAP_BASE, "filter": "(uid=%u)",
                     "timeout": "5s"},
            "outbound": {"resolver": b.named.server},
        }
        for sec, kv in self.extra.items():
            sections.setdefault(sec, {}).update(kv)
        lines = [text.rstrip("\n"), ""]
        for sec, kv in sections.items():
            lines.append("[%s]" % sec)
            lines += ["%s = %s" % (k, v) for k, v in kv.items()]
            lines.append("")
        return "\n".join(lines)

    def set(self, section, **kv):
        self.extra.setdefault(section, {}).update({k: str(v) for k, v in kv.items()})
        self.write_config()

    # -- semail-admin
    def create(self, login, ident=None, sub=None, domain=None, key="alice", size=None,
               expect_ok=True, timeout=180, wrap=None):
        """`user create`; returns the CompletedProcess. With EXPECT_OK,
        asserts exit 0 (skipping when semail-admin says a piece is missing)."""
        self.logins.add(login)
        args = ["user", "create", login, "--id", ident or login]
        args += ["--domain", domain] if domain else ["--subdomain", sub or login]
        if key:
            args += ["--ssh-key", self.bed.keys.pub(key)]
        if size:
            args += ["--size", size]
        if wrap:
            p = it.run(wrap + [it.ADMIN, "-c", self.conf] + args, timeout=timeout)
            assert it.sanitizer_report(p.stderr.decode("utf-8", "replace")) is None, \
                p.stderr.decode()
        else:
            p = self.admin(*args, timeout=timeout)
        if expect_ok:
            skip_if_not_yet(p, "user create")
            assert p.returncode == 0, "user create %s failed (%d):\n%s%s" % (
                " ".join(args[2:]), p.returncode, p.stdout.decode(), p.stderr.decode())
        return p

    def delete(self, login, archive=None, expect_ok=True, timeout=180):
        args = ["user", "delete", login] + (["--archive", archive] if archive else [])
        p = self.admin(*args, timeout=timeout)
        if expect_ok:
            skip_if_not_yet(p, "user delete" + (" --archive" if archive else ""))
            assert p.returncode == 0, "user delete %s failed (%d):\n%s%s" % (
                login, p.returncode, p.stdout.decode(), p.stderr.decode())
        return p

    def show(self, login):
        """`user show LOGIN --json` as a dict, or None when there is no box."""
        p = self.admin("user", "show", login, "--json")
        if p.returncode != 0:
            return None
        return json.loads(p.stdout.decode())

    def registry_logins(self):
        p = self.admin("user", "list", "--json")
        assert p.returncode == 0, p.stderr.decode()
        data = json.loads(p.stdout.decode())
        if isinstance(data, dict):
            data = data.get("users", [])
        return sorted(u["login"] for u in data)

    # -- what exists
    def image_path(self, login):
        return os.path.join(self.image_dir, login + ".img")

    def mount_point(self, login):
        return os.path.join(self.mail_root, login)

    def keys_dir(self, login):
        return os.path.join(self.state_dir, "keys", login)

    def dns_names(self, sub):
        name = "%s.%s." % (sub, ZONE)
        return {r for r in self.bed.named.records(ZONE) if r[0] == name}

    def leftovers(self, login, sub=None, domain=None, keys=True):
        """Everything of LOGIN's box that still exists, as readable lines."""
        left = []
        if login in self.registry_logins():
            left.append("registry record of %s (user list --json)" % login)
        for f in sorted(os.listdir(self.image_dir)):
            if f == login + ".img" or f.startswith(login + ".img."):
                left.append("image file %s" % os.path.join(self.image_dir, f))
        mp = self.mount_point(login)
        m = mount_at(mp)
        if m:
            left.append("mount at %s (%s from %s)" % (mp, m[2], m[3]))
        elif os.path.isdir(mp) and os.listdir(mp):
            left.append("non-empty directory %s: %s" % (mp, sorted(os.listdir(mp))[:10]))
        loops = loops_backing(self.image_path(login))
        if loops:
            left.append("loop device(s) %s" % loops)
        if self.bed.engine.running() and not self.bed.engine.frozen:
            c = self.bed.engine.inspect("semail-" + login)
            if c is not None:
                left.append("container semail-%s (%s)" % (login, c["State"]["Status"]))
        if sub:
            recs = self.dns_names(sub)
            if recs:
                left.append("DNS records %s" % sorted(recs))
        if domain:
            before = self.dns_baseline[ZONE]
            extra = self.bed.named.records(ZONE) - before
            if extra:
                left.append("DNS records added to %s: %s" % (ZONE, sorted(extra)))
        if keys and os.path.exists(self.keys_dir(login)):
            left.append("key directory %s" % self.keys_dir(login))
        return left

    def describe(self, login):
        """Diagnostics for an assertion message."""
        lines = ["registry: %s" % self.registry_logins()]
        lines.append("image_dir: %s" % sorted(os.listdir(self.image_dir)))
        lines.append("mounts under root: %s" % mounts_under(self.root))
        lines.append("loops: %s" % loops_backing(self.image_dir))
        if self.bed.engine.running() and not self.bed.engine.frozen:
            lines.append("containers: %s" % self.bed.engine.container_names())
        return "\n".join(lines)

    # -- teardown
    def cleanup(self):
        """Remove whatever the test left: boxes (through semail-admin first,
        then by hand), containers, mounts, loop devices, DNS records."""
        errors = []
        b = self.bed
        if b.engine.frozen:
            b.engine.thaw()
        if not b.engine.running():
            b.engine.start()
        if not b.named.running():
            b.named.start()
        try:
            for login in self.registry_logins():
                self.logins.add(login)
                self.admin("user", "delete", login, timeout=120)
        except Exception as e:      # the by-hand cleanup below must still run
            errors.append("semail-admin cleanup: %r" % e)
        for login in sorted(self.logins):
            if b.engine.inspect("semail-" + login) is not None:
                b.engine.remove("semail-" + login)
        for mnt in reversed(mounts_under(self.root)):
            p = it.run(["umount", mnt], timeout=60)
            if p.returncode != 0:
                it.run(["umount", "-l", mnt], timeout=60)
        for dev in loops_backing(self.image_dir):
            it.run(["losetup", "-d", dev], timeout=30)
        for zone in (ZONE, OWN_DOMAIN):
            now = b.named.records(zone)
            extra = now - self.dns_baseline[zone]
            missing = self.dns_baseline[zone] - now
            lines = ["delete %s %s %s" % r for r in sorted(extra)]
            lines += ["add %s 60 %s %s" % r for r in sorted(missing)]
            if lines:
                rc, out = b.named.update(zone, *lines)
                if rc != 0:
                    errors.append("restoring zone %s: %s" % (zone, out))
        return errors


class Bed:
    """The session's servers: engine, named, slapd, keys. Each part that
    could not start keeps its error, so that the infrastructure tests fail
    on it and the product tests skip with it."""

    def __init__(self, root, slapd):
        self.root = str(root)
        self.slapd = slapd
        self.errors = {}
        self.engine = Engine()
        self.named = DynNamed(os.path.join(self.root, "named"))
        self.keys = SshKeys(os.path.join(self.root, "ssh"))
        for name, part in (("named", self.named), ("engine", self.engine)):
            try:
                part.start()
            except Exception as e:     # kept and reported by the tests
                self.errors[name] = "%s did not start: %s" % (name, e)

    def require(self, *parts):
        for part in parts:
            if part in self.errors:
                pytest.skip("the test bed's " + self.errors[part])

    def close(self):
        errors = []
        for part in (self.engine, self.named):
            try:
                if part is self.engine:
                    part.close()
                else:
                    part.stop()
            except Exception as e:
                errors.append(repr(e))
        return errors


@contextlib.contextmanager
def stopped(part):
    """Stop a server of the bed for the body, start it again afterwards."""
    part.stop()
    try:
        yield part
    finally:
        part.start()


@contextlib.contextmanager
def frozen(engine):
    engine.freeze()
    try:
        yield engine
    finally:
        if engine.frozen:
            engine.thaw()


def no_loop_device_wrap():
    """An argv prefix running a program in a mount namespace of its own where
    /dev/loop-control and every /dev/loopN are /dev/null: LOOP_CTL_GET_FREE
    and LOOP_CONFIGURE fail, as when no loop device is free (the kernel here
    makes new devices on demand, so they cannot simply all be taken). The
    host's mounts still reach it (slave propagation); its own go nowhere."""
    return ["unshare", "--mount", "--propagation", "slave", "--",
            "sh", "-c", 'for d in /dev/loop-control /dev/loop[0-9]*; do '
            'mount --bind /dev/null "$d" || exit 99; done; exec "$@"', "sh"]


# --------------------------------------------------------------------------
# Boxes


class Box:
    """One created box: its login, address, `user show --json` and SSH port."""

    def __init__(self, platform, login, key):
        self.platform = platform
        self.login = login
        self.key = platform.bed.keys.path(key)
        self.info = platform.show(login)
        assert self.info is not None, "user show %s: no box after create" % login
        self.uid = self.info["uid"]
        self.port = self.info["ssh_port"]
        assert isinstance(self.port, int) and self.port > 0, \
            "user show %s --json: ssh_port %r, expected the published port" % (login, self.port)

    def ssh(self, command, **kw):
        return ssh(self.port, self.login, self.key, command, **kw)

    def sh(self, command):
        """Run COMMAND in the container as the person; assert exit 0; stdout."""
        p = self.ssh(command)
        assert p.returncode == 0, "ssh %s %r: %d %s" % (self.login, command, p.returncode,
                                                        p.stderr.decode()[-1500:])
        return p.stdout.decode()


def make_box(platform, login, key, **kw):
    platform.create(login, key=key, **kw)
    box = Box(platform, login, key)
    wait_ssh(box.port, login, box.key, diag=lambda: platform.describe(login))
    return box


# --------------------------------------------------------------------------
# Mail


def deliver(port, rcpt, subject, body=b"Hello from the provisioning tests.\n",
            sender="sender@example.org"):
    """One SMTP transaction to semail-inbound; returns (rcpt reply, final reply or None, msg)."""
    msg = it.make_message(subject, body, sender=sender, to=rcpt)
    with it.Smtp(port) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo()
        mail = c.cmd("MAIL FROM:<%s>" % sender)
        assert mail.code == 250, mail
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        final = None
        if r.code == 250:
            final = c.data(msg)
        else:
            c.cmd("RSET")
        c.quit()
    return r, final, msg
