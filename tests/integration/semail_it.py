"""Helpers for the SEMail integration suite: a temporary platform (config,
registry, mail root), the semail-inbound server under test, a small strict
SMTP client on raw sockets, and an mboxrd reader.

Everything here is bounded in time: sockets carry timeouts, subprocesses are
waited for with a timeout, and the server is only ever reached on loopback.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

BUILD = os.environ.get("SEMAIL_BUILD") or "/work/main/build"
INBOUND = os.path.join(BUILD, "bin", "semail-inbound")
ADMIN = os.path.join(BUILD, "bin", "semail-admin")

HOSTNAME = "mx.semail.test"
DOMAIN = "semail.test"

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer")

# RFC 3463 enhanced status code at the start of the reply text.
ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
# "From SENDER asctime" as SPEC.md section 4 fixes it.
FROM_LINE_RE = re.compile(
    rb"^From (\S+) (Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d "
    rb"\d\d:\d\d:\d\d \d{4}$")
QUEUED_RE = re.compile(r"^2\.0\.0 Ok: queued as \S+")


def sanitizer_report(text):
    """The first sanitizer mark found in a program's stderr, or None."""
    for mark in SANITIZER_MARKS:
        if mark in text:
            return mark
    return None


def free_port():
    """A TCP port free on both 127.0.0.1 and ::1 right now."""
    for _ in range(200):
        s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            try:
                s6.bind(("::1", port))
            except OSError:
                continue
            return port
        finally:
            s4.close()
            s6.close()
    raise RuntimeError("no free port on 127.0.0.1 and ::1")


# --------------------------------------------------------------------------
# Folder names (SPEC.md section 4)

FOLDER_SAFE = set(b"abcdefghijklmnopqrstuvwxyz0123456789.!#$&'*+=?^_`{|}~@-")


def folder_part(addr):
    if addr == "":
        return "MAILER-DAEMON"
    out = []
    for b in addr.lower().encode("utf-8"):
        out.append(chr(b) if b in FOLDER_SAFE else "%%%02X" % b)
    return "".join(out)


def folder_name(recipient, sender):
    name = folder_part(recipient) + "," + folder_part(sender)
    if name.startswith("."):
        name = "%2E" + name[1:]
    return name


# --------------------------------------------------------------------------
# mboxrd


class MboxMessage:
    """One message of an mboxrd file: its From_ line and its text with the
    mboxrd quoting undone (one '>' removed from lines matching ^>+From )."""

    def __init__(self, from_line, text):
        self.from_line = from_line
        self.text = text

    @property
    def header(self):
        return self.text.split(b"\n\n", 1)[0]

    @property
    def body(self):
        parts = self.text.split(b"\n\n", 1)
        return parts[1] if len(parts) > 1 else b""

    def header_value(self, name):
        """First value of header NAME (unfolded), as str, or None."""
        want = name.lower().encode() + b":"
        lines = self.header.split(b"\n")
        for i, line in enumerate(lines):
            if line.lower().startswith(want):
                value = line[len(want):]
                j = i + 1
                while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
                    value += b" " + lines[j].strip()
                    j += 1
                return value.strip().decode("utf-8", "replace")
        return None


def parse_mboxrd(data):
    """Split an mboxrd file into MboxMessage objects, strictly: every message
    starts with a From_ line of the SPEC's form and ends with an empty line.
    Raises AssertionError on anything else (a torn or partial append)."""
    if not data:
        return []
    assert data.startswith(b"From "), "mbox does not start with a From_ line: %r" % data[:80]
    msgs = []
    for part in re.split(rb"(?m)^(?=From )", data):
        if not part:
            continue
        nl = part.find(b"\n")
        assert nl > 0, "From_ line without end: %r" % part[:80]
        from_line = part[:nl]
        assert FROM_LINE_RE.match(from_line), "bad From_ line %r" % from_line
        rest = part[nl + 1:]
        assert rest.endswith(b"\n\n"), \
            "message after %r does not end with an empty line (tail %r)" % (from_line, rest[-80:])
        text = rest[:-1]
        text = re.sub(rb"(?m)^>(>*From )", rb"\1", text)
        msgs.append(MboxMessage(from_line, text))
    return msgs


def read_mbox(path):
    """Messages of the mbox at PATH; a missing file is an empty mbox."""
    try:
        with open(path, "rb") as f:
            return parse_mboxrd(f.read())
    except FileNotFoundError:
        return []


def split_delivered(msg, original):
    """Check that MSG is ORIGINAL (LF line ends) with only the Return-Path:
    and Received: headers prepended; return the prepended part."""
    text = msg.text
    assert text.endswith(original), (
        "stored message does not end with the message sent\nstored tail: %r\nsent tail:   %r"
        % (text[-200:], original[-200:]))
    prefix = text[:len(text) - len(original)]
    assert prefix.startswith(b"Return-Path: <"), "no leading Return-Path: %r" % prefix[:200]
    for line in prefix.split(b"\n")[:-1]:
        assert (line.startswith(b"Return-Path: ") or line.startswith(b"Received: ")
                or line[:1] in (b" ", b"\t")), "unexpected prepended line %r" % line
    assert b"\nReceived: " in prefix, "no Received: header prepended: %r" % prefix
    assert prefix.endswith(b"\n")
    return prefix


def to_crlf(text):
    """LF text to the CRLF lines of SMTP."""
    assert b"\r" not in text
    return text.replace(b"\n", b"\r\n")


def dot_stuff(crlf_text):
    """RFC 5321 4.5.2 transparency for CRLF text (must end with CRLF)."""
    assert crlf_text.endswith(b"\r\n")
    out = re.sub(rb"(?m)^\.", b"..", crlf_text)
    return out


def make_message(subject, body=b"Hello.\n", sender="sender@example.org",
                 to="alice@alice.semail.test", msgid=None, extra=b""):
    """An RFC 5322 message with LF line ends."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if msgid is None:
        msgid = "<%s.%d@it.semail.test>" % (re.sub(r"\W", "", subject)[:30], time.monotonic_ns())
    head = ("From: %s\nTo: %s\nSubject: %s\nMessage-ID: %s\nDate: Mon, 01 Jan 2024 00:00:00 +0000\n"
            % (sender, to, subject, msgid)).encode()
    return head + extra + b"\n" + body


# --------------------------------------------------------------------------
# SMTP client


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines          # text after "NNN-" / "NNN "

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        m = ENHANCED_RE.match(self.lines[0]) if self.lines else None
        return m.group(0).strip() if m else None

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class SmtpError(AssertionError):
    pass


class Smtp:
    """A deliberately plain SMTP client: it sends exactly the bytes it is
    given and parses replies strictly, so that tests can misbehave."""

    def __init__(self, port, host="127.0.0.1", timeout=30.0, source=None, greet=True):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""
        self.greeting = self.reply() if greet else None

    # -- raw I/O
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        lines = []
        code = None
        while True:
            line = self.line()
            if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
                raise SmtpError("malformed reply line %r" % line)
            c = int(line[:3])
            if code is not None and c != code:
                raise SmtpError("reply code changed inside a multi-line reply: %r" % line)
            code = c
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return Reply(code, lines)

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def read_until_eof(self, limit=10.0):
        """Everything the server still sends until it closes (bounded)."""
        end = time.monotonic() + limit
        data = self.buf
        self.buf = b""
        while time.monotonic() < end:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                return data, True
            if not chunk:
                return data, True
            data += chunk
        return data, False

    def all_replies_until_eof(self, limit=10.0):
        data, closed = self.read_until_eof(limit)
        codes = [int(l[:3]) for l in data.decode("utf-8", "replace").split("\r\n")
                 if len(l) >= 4 and l[:3].isdigit() and l[3] == " "]
        return codes, data, closed

    # -- commands
    def cmd(self, line):
        self.send(line.encode() + b"\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply()

    def expect(self, line, code):
        r = self.cmd(line)
        if r.code != code:
            raise SmtpError("%r: expected %d, got %r" % (line, code, r))
        return r

    def ehlo(self, name="client.example.org"):
        return self.expect("EHLO " + name, 250)

    def data(self, message_lf, stuff=True):
        """DATA with MESSAGE_LF (LF lines, converted to CRLF); return the final reply."""
        r = self.cmd("DATA")
        if r.code != 354:
            return r
        payload = to_crlf(message_lf)
        if stuff:
            payload = dot_stuff(payload)
        self.send(payload + b".\r\n")
        return self.reply()

    def transaction(self, sender, rcpts, message_lf, mail_params=""):
        """MAIL, RCPT..., DATA; returns (mail reply, rcpt replies, final reply or None)."""
        mail = self.cmd("MAIL FROM:<%s>%s" % (sender, mail_params))
        rr = [self.cmd("RCPT TO:<%s>" % r) for r in rcpts]
        if mail.code != 250 or not any(r.code == 250 for r in rr):
            self.cmd("RSET")
            return mail, rr, None
        return mail, rr, self.data(message_lf)

    def quit(self, wait=5.0):
        """QUIT, then wait (bounded) for the server to close, then close."""
        try:
            r = self.cmd("QUIT")
            self.read_until_eof(wait)
        except (EOFError, OSError):
            r = None
        self.close()
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def send_mail(port, sender, rcpts, message_lf, host="127.0.0.1", mail_params=""):
    """One complete, well-behaved delivery; returns the final reply."""
    with Smtp(port, host=host) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo()
        mail, rr, final = c.transaction(sender, rcpts, message_lf, mail_params)
        assert mail.code == 250, mail
        for r, addr in zip(rr, rcpts):
            assert r.code == 250, (addr, r)
        assert final is not None
        c.quit()
        return final


# --------------------------------------------------------------------------
# The platform and the server


def run(argv, timeout=60, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


class Platform:
    """A throw-away SEMail platform in a temporary directory: its config,
    registry (state_dir) and mail_root; its semail-inbound listens on
    127.0.0.1:PORT and [::1]:PORT."""

    def __init__(self, root):
        self.root = str(root)
        self.state_dir = os.path.join(self.root, "state")
        self.mail_root = os.path.join(self.root, "mail")
        self.conf = os.path.join(self.root, "semail.conf")
        os.makedirs(self.state_dir, exist_ok=True)
        os.makedirs(self.mail_root, exist_ok=True)
        self.port = free_port()
        self.inbound = {}
        self.write_config()

    def config_text(self, inbound=None):
        settings = {"listen": "127.0.0.1:%d, [::1]:%d" % (self.port, self.port),
                    "max_errors": "50"}
        settings.update(self.inbound)
        settings.update(inbound or {})
        lines = ["# written by the SEMail integration suite",
                 "[global]",
                 "hostname = " + HOSTNAME,
                 "domain = " + DOMAIN,
                 "state_dir = " + self.state_dir,
                 "mail_root = " + self.mail_root,
                 "user =",
                 "",
                 "[inbound]"]
        lines += ["%s = %s" % kv for kv in settings.items()]
        lines += ["", "[storage]", "backend = directory",
                  "", "[containers]", "enabled = no",
                  "", "[dns]", "enabled = no", ""]
        return "\n".join(lines)

    def write_config(self, **inbound):
        """Rewrite the config with these [inbound] settings added."""
        self.inbound.update({k: str(v) for k, v in inbound.items()})
        with open(self.conf, "w") as f:
            f.write(self.config_text())

    # -- semail-admin
    def admin(self, *args, timeout=60):
        p = run([ADMIN, "-c", self.conf] + list(args), timeout=timeout)
        report = sanitizer_report(p.stderr.decode("utf-8", "replace"))
        assert report is None, "semail-admin %s: %s\n%s" % (args, report, p.stderr.decode())
        return p

    def create_user(self, login, ident=None, sub=None, domain=None):
        ident = ident or login
        args = ["user", "create", login, "--id", ident]
        if domain:
            args += ["--domain", domain]
        else:
            args += ["--subdomain", sub or login]
        p = self.admin(*args)
        assert p.returncode == 0, "user create %s failed (%d): %s%s" % (
            login, p.returncode, p.stdout.decode(), p.stderr.decode())
        return "%s@%s" % (ident, domain or "%s.%s" % (sub or login, DOMAIN))

    def delete_user(self, login):
        p = self.admin("user", "delete", login)
        assert p.returncode == 0, "user delete %s failed (%d): %s" % (
            login, p.returncode, p.stderr.decode())

    def users_json(self):
        p = self.admin("user", "list", "--json")
        assert p.returncode == 0, p.stderr.decode()
        return json.loads(p.stdout.decode())

    # -- mail
    def box(self, login, name="INBOX"):
        return os.path.join(self.mail_root, login, name)

    def folder(self, login, recipient, sender):
        return self.box(login, folder_name(recipient, sender))

    def messages(self, login, name="INBOX"):
        return read_mbox(self.box(login, name))

    def mbox_files(self):
        """Every regular file under mail_root, relative paths."""
        out = []
        for d, _, files in os.walk(self.mail_root):
            for f in files:
                out.append(os.path.relpath(os.path.join(d, f), self.mail_root))
        return sorted(out)


class Server:
    """semail-inbound -c CONF in the foreground, stderr to a file."""

    def __init__(self, platform, name="inbound"):
        self.platform = platform
        self.stderr_path = os.path.join(platform.root, "%s.%d.stderr" % (name, time.monotonic_ns()))
        self.proc = None
        self.expect_exit = 0          # None: do not check the exit status (killed on purpose)

    def start(self, timeout=20.0):
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([INBOUND, "-c", self.platform.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err)
        self.expect_exit = 0
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.expect_exit = None
                raise AssertionError("semail-inbound exited with %d at start:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            try:
                c = Smtp(self.platform.port, timeout=5.0)
            except (ConnectionRefusedError, socket.timeout, EOFError, ConnectionResetError):
                time.sleep(0.05)
                continue
            try:
                assert c.greeting.code == 220, c.greeting
                # quit() waits for the close: the probe's session is over
                # before the test counts sessions.
                c.quit()
            finally:
                c.close()
            time.sleep(0.1)
            return self
        self.stop_quietly()
        self.expect_exit = None
        raise AssertionError("semail-inbound did not accept within %.0fs:\n%s"
                             % (timeout, self.stderr()))

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL on purpose: the exit status is not checked."""
        self.expect_exit = None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._err.close()

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=30.0):
        """SIGTERM; assert exit status 0 and a clean sanitizer report."""
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
            raise AssertionError("semail-inbound did not exit within %.0fs of SIGTERM:\n%s"
                                 % (timeout, self.stderr()[-4000:]))
        self._err.close()
        err = self.stderr()
        report = sanitizer_report(err)
        assert report is None, "semail-inbound: %s\n%s" % (report, err[-20000:])
        if self.expect_exit is not None:
            assert rc == 0, "semail-inbound exited with %d after SIGTERM:\n%s" % (rc, err[-4000:])

    def stop_quietly(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def mutt_read(mbox, workdir, timeout=60):
    """Make mutt (read-only, no user config) open MBOX, tag every message and
    pipe each, one by one, to a script; return the list of raw messages mutt
    handed over (From_ line included). Runs under script(1) for a terminal."""
    out = os.path.join(workdir, "mutt.out")
    helper = os.path.join(workdir, "mutt-pipe.sh")
    rc = os.path.join(workdir, "muttrc")
    with open(helper, "w") as f:
        f.write("#!/bin/sh\ncat >> '%s'\n" % out)
    os.chmod(helper, 0o755)
    with open(rc, "w") as f:
        # folder set to an existing directory: otherwise mutt asks whether to
        # create ~/Mail, and the question eats the pushed keys.
        f.write('set folder="%s"\nset spoolfile="%s"\nset record=""\nset postponed=""\n'
                'set wait_key=no\nset pipe_split=yes\nset pipe_decode=no\n'
                'set pipe_sep="=MUTT-SEP=\\n"\nset sort=mailbox-order\n'
                'push "<tag-pattern>~A<enter><tag-prefix><pipe-message>%s<enter><exit>"\n'
                % (workdir, mbox, helper))
    if os.path.exists(out):
        os.unlink(out)
    env = dict(os.environ, TERM="xterm", HOME=workdir, MAIL=mbox)
    cmd = "mutt -n -F '%s' -R -f '%s'" % (rc, mbox)
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                       env=env)
    assert p.returncode == 0, "mutt failed (%d): %s" % (p.returncode, p.stderr.decode())
    with open(out, "rb") as f:
        data = f.read()
    parts = data.split(b"=MUTT-SEP=\n")
    assert parts[-1] == b"", "mutt output does not end with the separator"
    return parts[:-1]


def which(prog):
    return shutil.which(prog) or (os.path.exists(prog) and prog)
