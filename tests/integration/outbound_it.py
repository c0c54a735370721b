"""Helpers for the semail-outbound integration tests: the real servers around
it, each started by the tests and always stopped at the end.

- `Named`: BIND9 (`named -g`) authoritative for the whole `test.` zone on a
  free loopback port (127.0.0.1 and ::1), with the records of ZONE_RECORDS:
  one domain per scenario, every "remote MX" on its own 127.0.0.x address
  (or ::1). Every remote server of a test listens on the SAME port, the
  test's `remote_port`, so that only DNS says where mail goes.
- `Slapd`: OpenLDAP with the people of PEOPLE (ldap:// and ldaps://).
- `make_tls_pair`: a self-signed certificate for the TLS listener and slapd.
- `SmtpSink`: Postfix's smtp-sink, dumping every transaction to a file.
- `ScriptedSmtp`: a small SMTP server in a thread of the test process whose
  answers a test scripts (451 then 250, 550 to RCPT, no greeting at all...).
- `OutboundPlatform`: semail_it.Platform plus the [outbound] and [ldap]
  sections; `Outbound`: the semail-outbound process under test.
- Submission clients (plain, TLS with AUTH, from an untrusted source
  address), a DSN (RFC 3464) parser, `semail-admin queue` wrappers, and
  `wait_until`, the bounded poll that every test uses instead of sleeping.

Nothing here ever talks to anything but loopback.
"""

import base64
import email
import email.policy
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

import semail_it as it

OUTBOUND = os.path.join(it.BUILD, "bin", "semail-outbound")

needs_outbound = pytest.mark.skipif(
    not os.access(OUTBOUND, os.X_OK),
    reason="semail-outbound is not built yet: %s missing (set SEMAIL_BUILD)" % OUTBOUND)

ALICE = "alice@alice.semail.test"
BOB = "bob@bob.semail.test"
PASSWORDS = {"alice": "alice-Secret1", "bob": "bob-Secret2", "carol": "carol-Secret3"}
LDAP_BASE = "ou=people,dc=semail,dc=test"

# The end of every message body the tests send: a sink dump is complete
# once it ends with this line (and smtp-sink's empty line).
END_MARK = b"-- end of test message --\n"

QID_RE = re.compile(r"queued as ([0-9A-Za-z]{8,64})")

# --------------------------------------------------------------------------
# DNS: one authoritative zone "test." for every scenario.

# (name relative to test., type, data)
ZONE_RECORDS = [
    ("v4only", "MX", "10 mx4.v4only"),
    ("mx4.v4only", "A", "127.0.0.2"),
    ("v6only", "MX", "10 mx6.v6only"),
    ("mx6.v6only", "AAAA", "::1"),
    # Preference: 10 refuses connections (nothing listens), 20 answers.
    ("pref", "MX", "10 mxa.pref"),
    ("pref", "MX", "20 mxb.pref"),
    ("mxa.pref", "A", "127.0.0.3"),
    ("mxb.pref", "A", "127.0.0.4"),
    # No MX: the domain itself (RFC 5321 5.1).
    ("implicit", "A", "127.0.0.5"),
    # RFC 7505.
    ("nullmx", "MX", "0 ."),
    # Scripted peers.
    ("hang", "MX", "10 mx.hang"),
    ("mx.hang", "A", "127.0.0.6"),
    ("tempfail", "MX", "10 mx.tempfail"),
    ("mx.tempfail", "A", "127.0.0.7"),
    ("reject", "MX", "10 mx.reject"),
    ("mx.reject", "A", "127.0.0.8"),
    ("down", "MX", "10 mx.down"),
    ("mx.down", "A", "127.0.0.10"),
    ("queue", "MX", "10 mx.queue"),
    ("mx.queue", "A", "127.0.0.11"),
    # Two MX of equal preference: random order.
    ("equal", "MX", "10 mx1.equal"),
    ("equal", "MX", "10 mx2.equal"),
    ("mx1.equal", "A", "127.0.0.13"),
    ("mx2.equal", "A", "127.0.0.14"),
    # One MX with both families: AAAA first, then A.
    ("dual", "MX", "10 mx.dual"),
    ("mx.dual", "AAAA", "::1"),
    ("mx.dual", "A", "127.0.0.15"),
    ("crash", "MX", "10 mx.crash"),
    ("mx.crash", "A", "127.0.0.16"),
    # The platform itself: users' subdomains point at its semail-inbound.
    ("mx.semail", "A", "127.0.0.1"),
    ("mx.semail", "AAAA", "::1"),
    ("semail", "MX", "10 mx.semail"),
    ("alice.semail", "MX", "10 mx.semail"),
    ("bob.semail", "MX", "10 mx.semail"),
]
# Scenario -> the address its remote server listens on.
MX_ADDR = {"v4only": "127.0.0.2", "v6only": "::1", "pref_dead": "127.0.0.3",
           "pref": "127.0.0.4", "implicit": "127.0.0.5", "hang": "127.0.0.6",
           "tempfail": "127.0.0.7", "reject": "127.0.0.8", "down": "127.0.0.10",
           "queue": "127.0.0.11", "equal1": "127.0.0.13", "equal2": "127.0.0.14",
           "dual6": "::1", "dual4": "127.0.0.15", "crash": "127.0.0.16"}
NXDOMAIN = "no-such-domain.test"

UNTRUSTED = "127.0.0.9"     # outside trusted_networks = 127.0.0.1/32, ::1/128


def free_port():
    """A port free for TCP on 127.0.0.1 and ::1 and for UDP on 127.0.0.1 and ::1."""
    for _ in range(200):
        port = it.free_port()
        socks = []
        try:
            for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                s = socket.socket(fam, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free TCP+UDP port")


def wait_until(pred, timeout, what, diag=None, interval=0.1):
    """Poll PRED until it returns something true (returned) or TIMEOUT
    seconds pass (AssertionError naming WHAT, plus DIAG() if given)."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= end:
            extra = ""
            if diag is not None:
                try:
                    extra = "\n" + str(diag())
                except Exception as e:    # diagnostics must not hide the failure
                    extra = "\n(diagnostics failed: %r)" % e
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


def stop_process(proc, name, timeout=15.0):
    """SIGTERM, bounded wait, then SIGKILL. Returns the exit status."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError("%s did not exit within %.0fs of SIGTERM" % (name, timeout))


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class Named:
    """BIND9 authoritative for `test.` on 127.0.0.1:PORT and [::1]:PORT."""

    def __init__(self, root, records=ZONE_RECORDS):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.root, "named.conf")
        self.zone = os.path.join(self.root, "test.zone")
        self.log = os.path.join(self.root, "named.stderr")
        self.proc = None
        lines = ["$TTL 60",
                 "@ IN SOA ns.test. hostmaster.test. ( 1 3600 600 86400 60 )",
                 "@ IN NS ns.test.",
                 "ns IN A 127.0.0.1"]
        lines += ["%s IN %s %s" % r for r in records]
        with open(self.zone, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.conf, "w") as f:
            f.write("""options {
  directory "%(d)s"; pid-file "%(d)s/named.pid";
  session-keyfile "%(d)s/session.key"; managed-keys-directory "%(d)s";
  listen-on port %(p)d { 127.0.0.1; }; listen-on-v6 port %(p)d { ::1; };
  recursion no; dnssec-validation no; notify no; allow-query { any; };
};
controls { };
zone "test" { type primary; file "%(z)s"; };
""" % {"d": self.root, "p": self.port, "z": self.zone})

    def start(self, timeout=20.0):
        for check in (["named-checkconf", self.conf], ["named-checkzone", "-q", "test", self.zone]):
            p = it.run(check, timeout=30)
            assert p.returncode == 0, "%s: %s%s" % (check, p.stdout.decode(), p.stderr.decode())
        self._err = open(self.log, "wb")
        # As root, named keeps root (no -u): the tests own the directory.
        self.proc = subprocess.Popen(["named", "-g", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("named exited with %d:\n%s" % (self.proc.returncode,
                                                                      _read(self.log)))
            return "NOERROR" in self.status("test", "SOA")
        wait_until(ready, timeout, "named to answer the SOA of test.", lambda: _read(self.log))
        return self

    def dig(self, name, rtype, server="127.0.0.1", short=True):
        argv = ["dig", "@" + server, "-p", str(self.port), "+time=1", "+tries=2", name, rtype]
        if short:
            argv.insert(1, "+short")
        p = it.run(argv, timeout=15)
        return p.stdout.decode()

    def status(self, name, rtype, server="127.0.0.1"):
        m = re.search(r"status: (\w+)", self.dig(name, rtype, server, short=False))
        return m.group(1) if m else "NO-ANSWER"

    def stop(self):
        try:
            stop_process(self.proc, "named")
        finally:
            if self.proc is not None:
                self._err.close()


# --------------------------------------------------------------------------
# TLS and LDAP


def make_tls_pair(directory):
    """A self-signed certificate for localhost / 127.0.0.1 / ::1; returns (cert, key)."""
    os.makedirs(directory, exist_ok=True)
    cert = os.path.join(directory, "tls.crt")
    key = os.path.join(directory, "tls.key")
    p = it.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
                "-keyout", key, "-out", cert], timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    os.chmod(key, 0o600)
    return cert, key


def slappasswd(secret):
    p = it.run(["slappasswd", "-s", secret], timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode().strip()


class Slapd:
    """slapd -d 0 (foreground) on ldap://127.0.0.1:PORT and
    ldaps://127.0.0.1:TLS_PORT with the people of PASSWORDS."""

    def __init__(self, root, cert, key, people=PASSWORDS):
        self.root = str(root)
        self.data = os.path.join(self.root, "data")
        os.makedirs(self.data, exist_ok=True)
        self.cert = cert
        self.port = free_port()
        self.tls_port = free_port()
        self.conf = os.path.join(self.root, "slapd.conf")
        self.log = os.path.join(self.root, "slapd.stderr")
        self.proc = None
        self.people = dict(people)
        with open(self.conf, "w") as f:
            f.write("""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
TLSCertificateFile %(cert)s
TLSCertificateKeyFile %(key)s
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %(d)s/slapd.pid
argsfile %(d)s/slapd.args
database mdb
maxsize 104857600
suffix "dc=semail,dc=test"
rootdn "cn=admin,dc=semail,dc=test"
rootpw %(rootpw)s
directory %(data)s
index objectClass,uid eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
""" % {"cert": cert, "key": key, "d": self.root, "data": self.data,
       "rootpw": slappasswd("adminpw")})
        ldif = ["dn: dc=semail,dc=test\nobjectClass: dcObject\nobjectClass: organization\n"
                "dc: semail\no: semail\n",
                "dn: %s\nobjectClass: organizationalUnit\nou: people\n" % LDAP_BASE]
        for uid, pw in self.people.items():
            ldif.append("dn: uid=%s,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\n"
                        "mail: %s@%s.semail.test\nuserPassword: %s\n"
                        % (uid, LDAP_BASE, uid, uid, uid, uid, uid, slappasswd(pw)))
        path = os.path.join(self.root, "init.ldif")
        with open(path, "w") as f:
            f.write("\n".join(ldif))
        p = it.run(["slapadd", "-q", "-f", self.conf, "-l", path], timeout=60)
        assert p.returncode == 0, p.stderr.decode()

    @property
    def uri(self):
        return "ldap://127.0.0.1:%d" % self.port

    @property
    def tls_uri(self):
        return "ldaps://127.0.0.1:%d" % self.tls_port

    def dn(self, uid):
        return "uid=%s,%s" % (uid, LDAP_BASE)

    def whoami(self, uid, password, tls=False):
        """Exit status of ldapwhoami binding as UID: 0 ok, 49 bad credentials."""
        env = dict(os.environ, LDAPTLS_CACERT=self.cert)
        p = it.run(["ldapwhoami", "-x", "-H", self.tls_uri if tls else self.uri,
                    "-D", self.dn(uid), "-w", password, "-o", "nettimeout=5"],
                   timeout=30, env=env)
        return p.returncode

    def start(self, timeout=20.0):
        self._err = open(self.log, "wb")
        self.proc = subprocess.Popen(
            ["slapd", "-d", "0", "-f", self.conf,
             "-h", "%s/ %s/" % (self.uri, self.tls_uri)],
            stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("slapd exited with %d:\n%s" % (self.proc.returncode,
                                                                      _read(self.log)))
            p = it.run(["ldapwhoami", "-x", "-H", self.uri, "-o", "nettimeout=2"], timeout=10)
            return p.returncode == 0
        wait_until(ready, timeout, "slapd to answer", lambda: _read(self.log), interval=0.05)
        return self

    def stop(self):
        try:
            stop_process(self.proc, "slapd")
        finally:
            if self.proc is not None:
                self._err.close()


# --------------------------------------------------------------------------
# Receiving servers


class Received:
    """One transaction a remote server accepted."""

    def __init__(self, client, mail_from, rcpts, text, server=None, when=None):
        self.client = client          # client address as the server saw it
        self.mail_from = mail_from    # envelope sender without <>
        self.rcpts = rcpts            # envelope recipients without <>
        self.text = text              # the message, LF line ends, unstuffed
        self.server = server          # name of the receiving server
        self.when = when              # time.monotonic() of the 250 (scripted servers)

    @property
    def message(self):
        return email.message_from_bytes(self.text, policy=email.policy.compat32)

    @property
    def subject(self):
        return self.message["Subject"]

    def __repr__(self):
        return "Received(%s from %r to %r, %r)" % (self.server, self.mail_from, self.rcpts,
                                                   self.subject)


def _unbracket(arg):
    arg = arg.strip()
    m = re.match(r"(?i)^(?:from:|to:)?\s*<([^>]*)>", arg)
    return m.group(1) if m else arg


class SmtpSink:
    """Postfix's smtp-sink on HOST:PORT dumping each transaction to a file.
    smtp-sink refuses to run as root without `-u nobody`, so its dump
    directory is a world-traversable temporary directory owned by nobody."""

    def __init__(self, host, port, name=None):
        self.host = host
        self.port = port
        self.name = name or host
        self.dir = tempfile.mkdtemp(prefix="semail-sink-")
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "nobody")
        self.log = os.path.join(self.dir, "sink.stderr")
        self.proc = None

    def start(self, timeout=10.0):
        hostport = "[%s]:%d" % (self.host, self.port) if ":" in self.host else \
            "%s:%d" % (self.host, self.port)
        self._err = open(self.log, "wb")
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-d", os.path.join(self.dir, "dump", "%M."),
             hostport, "100"], stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("smtp-sink %s exited with %d: %s"
                                     % (hostport, self.proc.returncode, _read(self.log)))
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                try:
                    s.connect((self.host, self.port))
                    return s.recv(100).startswith(b"220")
                except OSError:
                    return False
        wait_until(ready, timeout, "smtp-sink on %s" % hostport, interval=0.05)
        return self

    def _files(self):
        out = []
        for d, _, files in os.walk(os.path.join(self.dir, "dump")):
            out += [os.path.join(d, f) for f in files]
        return sorted(out)

    def messages(self):
        """Complete transactions dumped so far (a dump being written is left out)."""
        out = []
        for path in self._files():
            with open(path, "rb") as f:
                data = f.read()
            if not data.endswith(END_MARK + b"\n"):
                continue
            head, _, text = data.partition(b"\nReceived: ")
            fields = {}
            for line in head.split(b"\n"):
                k, _, v = line.decode("utf-8", "replace").partition(": ")
                fields.setdefault(k, []).append(v)
            # smtp-sink's own Received: field is folded over three lines.
            lines = text.split(b"\n")
            i = 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            body = b"\n".join(lines[i:])[:-1]      # drop the dump's final empty line
            client = fields.get("X-Client-Addr", [""])[0]
            if client.startswith("ipv6:"):
                client = client[5:]
            out.append(Received(client, _unbracket(fields.get("X-Mail-Args", [""])[0]),
                                [_unbracket(a) for a in fields.get("X-Rcpt-Args", [])],
                                body, self.name))
        return out

    def incomplete(self):
        return [p for p in self._files() if not _read(p).endswith(END_MARK.decode() + "\n")]

    def stop(self):
        try:
            stop_process(self.proc, "smtp-sink")
        finally:
            if self.proc is not None:
                self._err.close()
                self.proc = None

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class ScriptedSmtp:
    """An SMTP server in a thread of the test process, on HOST:PORT. Each
    answer comes from SCRIPT(conn_no, command, argument) -> reply line(s),
    None for "never answer" (the connection then hangs until the client
    closes it or the server stops), or NotImplemented for the default
    answer. conn_no counts connections from 1. Records every connection,
    every command with its answer, and every accepted transaction."""

    EHLO = ["250-%s", "250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES",
            "250 SIZE 104857600"]

    def __init__(self, host, port, script=None, name=None):
        self.host = host
        self.port = port
        self.name = name or host
        self.script = script or (lambda n, cmd, arg: NotImplemented)
        self.lock = threading.Lock()
        self.connections = []      # dicts: no, client, start, end (closed by the client or us)
        self.events = []           # (conn_no, command, argument, reply or None)
        self.accepted = []         # Received
        self.stopping = threading.Event()
        self.threads = []
        self.sock = None

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(50)
        self.sock.settimeout(0.2)
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self):
        self.stopping.set()
        for t in list(self.threads):
            t.join(timeout=5)
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def cleanup(self):
        pass

    def messages(self):
        with self.lock:
            return list(self.accepted)

    def connection_count(self):
        with self.lock:
            return len(self.connections)

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                info = {"no": len(self.connections) + 1, "client": addr[0],
                        "start": time.monotonic(), "end": None}
                self.connections.append(info)
            t = threading.Thread(target=self._serve, args=(conn, info), daemon=True)
            t.start()
            self.threads.append(t)

    def _answer(self, n, cmd, arg, default):
        r = self.script(n, cmd, arg)
        if r is NotImplemented:
            r = default
        with self.lock:
            self.events.append((n, cmd, arg, r))
        return r

    def _serve(self, conn, info):
        n = info["no"]
        conn.settimeout(0.2)
        buf = [b""]
        closed_by_peer = [False]

        def send(reply):
            if isinstance(reply, str):
                reply = [reply]
            conn.sendall(b"".join(x.encode() + b"\r\n" for x in reply))

        def read_line():
            while b"\r\n" not in buf[0]:
                if self.stopping.is_set():
                    return None
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    closed_by_peer[0] = True
                    return None
                buf[0] += chunk
            line, buf[0] = buf[0].split(b"\r\n", 1)
            return line

        def hang():
            while read_line() is not None:
                pass

        try:
            greeting = self._answer(n, "CONNECT", "", "220 %s ESMTP scripted" % self.name)
            if greeting is None:
                return hang()
            send(greeting)
            mail_from, rcpts = None, []
            while True:
                line = read_line()
                if line is None:
                    return
                text = line.decode("utf-8", "replace")
                cmd, _, arg = text.partition(" ")
                cmd = cmd.upper()
                if cmd in ("EHLO", "HELO"):
                    default = [x % self.name if "%s" in x else x for x in self.EHLO] \
                        if cmd == "EHLO" else "250 %s" % self.name
                elif cmd == "MAIL":
                    default = "250 2.1.0 Ok"
                elif cmd == "RCPT":
                    default = "250 2.1.5 Ok" if mail_from is not None else \
                        "503 5.5.1 Error: need MAIL command"
                elif cmd == "DATA":
                    default = "354 End data with <CR><LF>.<CR><LF>" if rcpts else \
                        "554 5.5.1 Error: no valid recipients" if mail_from is not None else \
                        "503 5.5.1 Error: need MAIL command"
                elif cmd == "RSET":
                    default = "250 2.0.0 Ok"
                elif cmd == "NOOP":
                    default = "250 2.0.0 Ok"
                elif cmd == "QUIT":
                    default = "221 2.0.0 Bye"
                else:
                    default = "502 5.5.2 Error: command not recognized"
                reply = self._answer(n, cmd, arg, default)
                if reply is None:
                    return hang()
                send(reply)
                code = (reply if isinstance(reply, str) else reply[-1])[:3]
                if cmd == "QUIT":
                    return
                if cmd in ("MAIL", "RSET", "EHLO", "HELO"):
                    mail_from, rcpts = None, []
                if cmd == "MAIL" and code == "250":
                    mail_from = _unbracket(arg)
                elif cmd == "RCPT" and code == "250":
                    rcpts.append(_unbracket(arg))
                elif cmd == "DATA" and code == "354":
                    data = self._read_data(conn, buf, read_line)
                    if data is None:
                        return
                    final = self._answer(n, "DOT", "", "250 2.0.0 Ok: queued by scripted")
                    if final is None:
                        return hang()
                    send(final)
                    if final.startswith("250"):
                        with self.lock:
                            self.accepted.append(Received(info["client"], mail_from,
                                                          list(rcpts), data, self.name,
                                                          time.monotonic()))
                    mail_from, rcpts = None, []
        except OSError:
            return
        finally:
            with self.lock:
                info["end"] = time.monotonic()
                info["closed_by_peer"] = closed_by_peer[0]
            try:
                conn.close()
            except OSError:
                pass

    @staticmethod
    def _read_data(conn, buf, read_line):
        lines = []
        while True:
            line = read_line()
            if line is None:
                return None
            if line == b".":
                return b"".join(l + b"\n" for l in lines)
            lines.append(line[1:] if line.startswith(b".") else line)


def script_first_n(n_bad, phase, reply):
    """A script answering REPLY at PHASE (e.g. "RCPT") on the first N_BAD
    connections, and the defaults afterwards."""
    def script(n, cmd, arg):
        if cmd == phase and n <= n_bad:
            return reply
        return NotImplemented
    return script


def script_always(phase, reply):
    def script(n, cmd, arg):
        return reply if cmd == phase else NotImplemented
    return script


# --------------------------------------------------------------------------
# The platform and semail-outbound


class OutboundPlatform(it.Platform):
    """A platform whose config also carries [outbound] (submission on
    127.0.0.1:sub_port and [::1]:sub_port, TLS on tls_port, resolver = the
    test's named, remote_port = the platform's port, on which every remote
    MX of the test listens) and [ldap] (the test's slapd)."""

    def __init__(self, root, named, slapd, tls_pair):
        self.named = named
        self.slapd = slapd
        self.tls_cert, self.tls_key = tls_pair
        self.sub_port = free_port()
        self.tls_port = free_port()
        self.outbound = {}
        self.ldap = {}
        super().__init__(root)
        self.remote_port = self.port

    def outbound_settings(self):
        s = {"listen": "127.0.0.1:%d, [::1]:%d" % (self.sub_port, self.sub_port),
             "listen_tls": "127.0.0.1:%d, [::1]:%d" % (self.tls_port, self.tls_port),
             "tls_cert": self.tls_cert,
             "tls_key": self.tls_key,
             "trusted_networks": "127.0.0.1/32, ::1/128",
             "resolver": "127.0.0.1:%d" % self.named.port,
             "remote_port": str(self.port),
             "retry_schedule": "1s, 2s",
             "max_queue_lifetime": "60s",
             "allow_plaintext_auth": "no"}
        s.update(self.outbound)
        return s

    def ldap_settings(self):
        s = {"uri": self.slapd.uri, "base": LDAP_BASE, "filter": "(uid=%u)", "bind_dn": "",
             "ca_file": self.slapd.cert}
        s.update(self.ldap)
        return s

    def config_text(self, inbound=None):
        text = super().config_text(inbound)
        lines = [text.rstrip("\n"), "", "[outbound]"]
        lines += ["%s = %s" % kv for kv in self.outbound_settings().items()]
        if self.ldap is not None:
            lines += ["", "[ldap]"]
            lines += ["%s = %s" % kv for kv in self.ldap_settings().items()]
        return "\n".join(lines) + "\n"

    def set_outbound(self, **settings):
        self.outbound.update({k: str(v) for k, v in settings.items()})
        self.write_config()

    def set_ldap(self, **settings):
        self.ldap.update({k: str(v) for k, v in settings.items()})
        self.write_config()

    # -- the queue on disk (docs/queue.md) and through semail-admin
    @property
    def queue_dir(self):
        return os.path.join(self.state_dir, "queue")

    def queued_files(self):
        try:
            return sorted(os.listdir(os.path.join(self.queue_dir, "msg")))
        except FileNotFoundError:
            return []

    def attempted(self, qid):
        """True once an attempt on QID has been recorded (docs/queue.md: state/QID
        appears with the first update)."""
        return os.path.exists(os.path.join(self.queue_dir, "state", qid))

    def queue_admin(self, *args, timeout=60):
        return self.admin("queue", *args, timeout=timeout)

    def queue_list_json(self):
        p = self.queue_admin("list", "--json")
        assert p.returncode == 0, "queue list --json failed (%d): %s%s" % (
            p.returncode, p.stdout.decode(), p.stderr.decode())
        try:
            return json.loads(p.stdout.decode())
        except ValueError as e:
            raise AssertionError("queue list --json is not JSON (%s): %r" % (e, p.stdout[:2000]))


def json_strings(obj):
    """Every string anywhere inside a JSON value."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from json_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from json_strings(v)


def json_messages(obj):
    """The per-message objects of `queue list --json`: a list of objects, or
    an object holding such a list (any key)."""
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        for v in obj.values():
            if isinstance(v, list) and all(isinstance(x, dict) for x in v):
                return v
    raise AssertionError("queue list --json: no list of messages in %r" % (obj,))


class Outbound:
    """semail-outbound -c CONF in the foreground, stderr to a file."""

    def __init__(self, platform, name="outbound"):
        self.platform = platform
        self.stderr_path = os.path.join(platform.root,
                                        "%s.%d.stderr" % (name, time.monotonic_ns()))
        self.proc = None
        self._err = None
        self.expect_exit = 0

    def start(self, timeout=20.0):
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([OUTBOUND, "-c", self.platform.conf],
                                     stdin=subprocess.DEVNULL, stdout=self._err,
                                     stderr=self._err)
        self.expect_exit = 0

        def ready():
            if self.proc.poll() is not None:
                self.expect_exit = None
                raise AssertionError("semail-outbound exited with %d at start:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            try:
                c = it.Smtp(self.platform.sub_port, timeout=5.0)
            except (OSError, EOFError):
                return False
            try:
                assert c.greeting.code == 220, c.greeting
                c.quit()
            finally:
                c.close()
            return True
        try:
            wait_until(ready, timeout, "semail-outbound to answer 220 on port %d"
                       % self.platform.sub_port, self.stderr, interval=0.05)
        except AssertionError:
            self.stop_quietly()
            self.expect_exit = None
            raise
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        return _read(self.stderr_path)

    def tail(self, n=4000):
        return "--- semail-outbound stderr (tail) ---\n" + self.stderr()[-n:]

    def kill(self):
        """SIGKILL on purpose: the exit status is not checked."""
        self.expect_exit = None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._err.close()

    def stop(self, timeout=30.0):
        """SIGTERM; assert exit status 0 and a stderr free of sanitizer reports."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._err.close()
            raise AssertionError("semail-outbound did not exit within %.0fs of SIGTERM:\n%s"
                                 % (timeout, self.tail()))
        if not self._err.closed:
            self._err.close()
        err = self.stderr()
        report = it.sanitizer_report(err)
        assert report is None, "semail-outbound: %s\n%s" % (report, err[-20000:])
        if self.expect_exit is not None:
            assert rc == 0, "semail-outbound exited with %d after SIGTERM:\n%s" % (rc, err[-4000:])

    def stop_quietly(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def check_config(platform, timeout=30):
    """semail-outbound -t -c CONF: (exit status, stdout+stderr)."""
    p = it.run([OUTBOUND, "-t", "-c", platform.conf], timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


# --------------------------------------------------------------------------
# Submission clients


def test_message(subject, sender=ALICE, to="someone@example.test", body=None):
    """A message whose body ends with END_MARK (sinks need it)."""
    body = (body if body is not None else b"Hello from the outbound suite.\n") + END_MARK
    return it.make_message(subject, body, sender=sender, to=to)


test_message.__test__ = False     # not a pytest test


def parse_qid(reply):
    m = QID_RE.search(reply.text if hasattr(reply, "text") else reply)
    return m.group(1) if m else None


def submit(platform, sender, rcpts, message_lf, source=None, host="127.0.0.1"):
    """One well-behaved submission on the plain listener; asserts 250 at
    each step and returns the QID from the final `250 2.0.0 Ok: queued as QID`."""
    with it.Smtp(platform.sub_port, host=host, timeout=30.0, source=source) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo()
        mail, rr, final = c.transaction(sender, rcpts, message_lf)
        assert mail.code == 250, ("MAIL FROM:<%s>" % sender, mail)
        for r, addr in zip(rr, rcpts):
            assert r.code == 250, ("RCPT TO:<%s>" % addr, r)
        assert final is not None and final.code == 250, final
        assert it.QUEUED_RE.match(final.lines[0]), \
            "final reply is not '250 2.0.0 Ok: queued as QID': %r" % final
        c.quit()
    return parse_qid(final)


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def smtp_ssl(platform, source=UNTRUSTED, timeout=30):
    """smtplib over the TLS listener, from SOURCE (untrusted by default)."""
    s = smtplib.SMTP_SSL("127.0.0.1", platform.tls_port, local_hostname="client.example.org",
                         timeout=timeout, context=tls_context(),
                         source_address=(source, 0) if source else None)
    s.ehlo()
    return s


def smtp_plain(platform, source=UNTRUSTED, timeout=30):
    s = smtplib.SMTP("127.0.0.1", platform.sub_port, local_hostname="client.example.org",
                     timeout=timeout, source_address=(source, 0) if source else None)
    s.ehlo()
    return s


class TlsSmtp(it.Smtp):
    """semail_it.Smtp (strict, raw) over TLS from the first byte."""

    def __init__(self, port, host="127.0.0.1", timeout=30.0, source=UNTRUSTED):
        super().__init__(port, host=host, timeout=timeout, source=source, greet=False)
        self.sock = tls_context().wrap_socket(self.sock)
        self.greeting = self.reply()


def b64(text):
    return base64.b64encode(text.encode()).decode()


def auth_plain(c, user, password):
    """AUTH PLAIN with an initial response on a raw client; the final reply."""
    return c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password)))


def auth_login(c, user, password):
    r = c.cmd("AUTH LOGIN")
    if r.code != 334:
        return r
    r = c.cmd(b64(user))
    if r.code != 334:
        return r
    return c.cmd(b64(password))


def ehlo_keywords(reply):
    return [l.split(" ", 1)[0].upper() for l in reply.lines[1:]]


def ehlo_auth(reply):
    """The AUTH mechanisms of an EHLO reply (upper case), or None when AUTH is absent."""
    for l in reply.lines[1:]:
        words = l.upper().split()
        if words and words[0] == "AUTH":
            return set(words[1:])
    return None


def auth_mechanisms(s):
    """The AUTH mechanisms an smtplib connection saw in EHLO (upper case)."""
    return set((s.esmtp_features.get("auth") or "").upper().split())


# --------------------------------------------------------------------------
# Delivery status notifications (RFC 3464)


class Dsn:
    """A bounce as stored in an mbox, taken apart with Python's email module."""

    def __init__(self, mbox_message):
        self.raw = mbox_message
        self.msg = email.message_from_bytes(mbox_message.text, policy=email.policy.compat32)
        assert self.msg.get_content_type() == "multipart/report", \
            "bounce is %s, not multipart/report:\n%r" % (self.msg.get_content_type(),
                                                         mbox_message.text[:3000])
        assert (self.msg.get_param("report-type") or "").lower() == "delivery-status", \
            "report-type is %r" % self.msg.get_param("report-type")
        parts = self.msg.get_payload()
        assert isinstance(parts, list) and len(parts) >= 2, "report with %r parts" % parts
        types = [p.get_content_type() for p in parts]
        assert types[0] == "text/plain", "first part is %s (RFC 3464: human-readable)" % types[0]
        assert "message/delivery-status" in types, types
        status_part = parts[types.index("message/delivery-status")]
        blocks = status_part.get_payload()
        assert isinstance(blocks, list) and len(blocks) >= 2, \
            "delivery-status without per-recipient fields: %r" % status_part.as_string()[:2000]
        self.per_message = blocks[0]
        self.recipients = blocks[1:]
        self.explanation = parts[0].get_payload(decode=True) or b""
        self.headers_part = None
        for t in ("text/rfc822-headers", "message/rfc822"):
            if t in types:
                self.headers_part = parts[types.index(t)]
                break

    def recipient(self, address):
        for r in self.recipients:
            final = r.get("Final-Recipient", "")
            if final.split(";", 1)[-1].strip().lower() == address.lower():
                return r
        raise AssertionError("no per-recipient block for %s in %r"
                             % (address, [r.get("Final-Recipient") for r in self.recipients]))

    def original_headers(self):
        """The original header as a Message (from text/rfc822-headers)."""
        assert self.headers_part is not None, "bounce carries no text/rfc822-headers part"
        payload = self.headers_part.get_payload()
        if isinstance(payload, list):       # message/rfc822
            return payload[0]
        raw = self.headers_part.get_payload(decode=True) or payload.encode()
        return email.message_from_bytes(raw, policy=email.policy.compat32)


HEADER_LINE_RE = re.compile(rb"^[!-9;-~]+:|^[ \t]")


def check_delivered(got, sender, rcpts, message_lf):
    """GOT (a Received) carries MESSAGE_LF for RCPTS from SENDER, with at most
    header fields (e.g. Received:) prepended by semail-outbound."""
    assert got.mail_from == sender, "MAIL FROM %r, sent as %r" % (got.mail_from, sender)
    assert sorted(r.lower() for r in got.rcpts) == sorted(r.lower() for r in rcpts), got.rcpts
    assert got.text.endswith(message_lf), (
        "the message arrived changed\narrived tail: %r\nsent tail:    %r"
        % (got.text[-300:], message_lf[-300:]))
    prefix = got.text[:len(got.text) - len(message_lf)]
    for line in prefix.split(b"\n")[:-1]:
        assert HEADER_LINE_RE.match(line), "prepended line is not a header field: %r" % line
    return prefix


def bounces(platform, login="alice"):
    """The bounces in LOGIN's INBOX: messages whose From_ line is MAILER-DAEMON."""
    return [m for m in platform.messages(login) if m.from_line.startswith(b"From MAILER-DAEMON ")]


def wait_bounce(platform, login="alice", count=1, timeout=30.0, diag=None):
    return wait_until(lambda: len(bounces(platform, login)) >= count and bounces(platform, login),
                      timeout, "%d bounce(s) in %s's INBOX" % (count, login), diag)


def check_bounce_layout(platform, bounce_msg, sender_login="alice", sender=ALICE):
    """What every bounce to a local sender must look like in its mbox."""
    text = bounce_msg.text
    assert bounce_msg.from_line.startswith(b"From MAILER-DAEMON "), bounce_msg.from_line
    rp = bounce_msg.header_value("Return-Path")
    assert rp == "<>", "bounce Return-Path is %r, not <>" % rp
    frm = bounce_msg.header_value("From") or ""
    assert "mailer-daemon" in frm.lower(), "bounce From: %r" % frm
    folder = it.read_mbox(platform.folder(sender_login, sender, ""))
    assert any(m.text == text for m in folder), \
        "bounce not in folder %r; files: %r" % (it.folder_name(sender, ""), platform.mbox_files())
    return Dsn(bounce_msg)
