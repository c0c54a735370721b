#!/usr/bin/python3
"""run.py - the SMTP dialog runner: plays tests/dialogs/*.dialog against a
server and checks every reply (curl's tests/data, chasquid's scripts).

A dialog is a text file, one step per line; `#` starts a comment line.
Header comments that carry data:
    # servers: inbound outbound     which servers it runs against (default both)
    # settings: key = value         an [inbound] setting for the server (repeatable)
    # log: REGEX                    the server's log must match this afterwards
Steps (the first connection, "main", is opened before the first step; no
greeting is read unless a step reads it):
    -> TEXT         send TEXT and CRLF
    => TEXT         send TEXT as is (no CRLF added)
    <~ REGEX        read one complete reply (all its lines) and re.search
                    REGEX in it (lines joined with \\n, re.M: ^ and $ per line)
    closed          the server closes the connection, sending nothing more
    sleep MS        wait MS milliseconds
    open NAME       open another connection; `@NAME STEP` runs STEP on it
    *N STEP         run STEP N times (e.g. `*100 -> NOOP`)
Escapes in TEXT: \\r \\n \\t \\0 \\xHH \\\\; $RCPT (a deliverable recipient)
and $HOST (the server's hostname) are replaced; $[TEXT*N] is TEXT N times.
In REGEX, $HOST is replaced by the escaped hostname.

Command line: run.py [--host H] [--rcpt ADDR] [--hostname NAME] PORT FILE...
(against a server someone started; prints "N passed, N failed").
"""

import os
import re
import socket
import sys
import time

TIMEOUT = 10.0


class DialogError(AssertionError):
    pass


class Dialog:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.servers = ["inbound", "outbound"]
        self.settings = {}
        self.logs = []
        self.steps = []          # (line number, connection, count, op, arg)
        self.title = ""
        self._parse()

    def _parse(self):
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for no, raw in enumerate(lines, 1):
            line = raw.rstrip()
            if not line:
                continue
            if line.startswith("#"):
                self._header(line[1:].strip())
                continue
            conn, count = "main", 1
            m = re.match(r"@(\w+)\s+(.*)$", line)
            if m:
                conn, line = m.group(1), m.group(2)
            m = re.match(r"\*(\d+)\s+(.*)$", line)
            if m:
                count, line = int(m.group(1)), m.group(2)
            m = re.match(r"(->|=>|<~)(?: (.*))?$", line)
            if m:
                self.steps.append((no, conn, count, m.group(1), m.group(2) or ""))
                continue
            m = re.match(r"(closed|sleep|open)(?:\s+(\S+))?$", line)
            if not m:
                raise DialogError("%s:%d: cannot parse %r" % (self.path, no, raw))
            self.steps.append((no, conn, count, m.group(1), m.group(2) or ""))

    def _header(self, text):
        key, sep, value = text.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("servers", "settings", "log"):
            if not self.title:
                self.title = text
            return
        value = value.strip()
        if key == "servers":
            self.servers = value.split()
        elif key == "settings":
            k, _, v = value.partition("=")
            self.settings[k.strip()] = v.strip()
        else:
            self.logs.append(value)


def expand(text, variables):
    """$RCPT, $HOST, $[TEXT*N], then the backslash escapes; bytes."""
    text = re.sub(r"\$\[(.*?)\*(\d+)\]", lambda m: m.group(1) * int(m.group(2)), text)
    for k, v in variables.items():
        text = text.replace("$" + k, v)
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 == len(text):
            out += c.encode("utf-8")
            i += 1
            continue
        n = text[i + 1]
        if n == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
            continue
        out += {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}.get(n, n.encode())
        i += 2
    return bytes(out)


class Conn:
    def __init__(self, host, port):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((host, port))
        self.buf = b""

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise EOFError()
        self.buf += chunk

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if not re.match(r"^\d{3}-", text):
                return "\n".join(lines)

    def closed(self):
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end:
            if self.buf:
                return self.buf
            try:
                self._fill()
            except EOFError:
                return None
            except socket.timeout:
                break
        return b"<still open>"

    def close(self):
        self.sock.close()


def run(dialog, host, port, variables):
    """Play DIALOG; raise DialogError naming the file and line on a mismatch."""
    conns = {"main": Conn(host, port)}
    log = []

    def fail(no, msg):
        raise DialogError("%s:%d: %s\n--- transcript ---\n%s"
                          % (dialog.path, no, msg, "\n".join(log[-40:])))

    regex_vars = {k: re.escape(v) for k, v in variables.items()}
    try:
        for no, name, count, op, arg in dialog.steps:
            if op == "open":
                conns[arg] = Conn(host, port)
                continue
            if name not in conns:
                fail(no, "no connection named %s" % name)
            c = conns[name]
            for _ in range(count):
                if op in ("->", "=>"):
                    data = expand(arg, variables) + (b"\r\n" if op == "->" else b"")
                    log.append("%s C: %r" % (name, data))
                    try:
                        c.sock.sendall(data)
                    except OSError as e:
                        fail(no, "send failed: %s" % e)
                elif op == "<~":
                    pattern = arg
                    for k, v in regex_vars.items():
                        pattern = pattern.replace("$" + k, v)
                    try:
                        got = c.reply()
                    except EOFError:
                        fail(no, "connection closed, expected a reply matching %r" % pattern)
                    except socket.timeout:
                        fail(no, "no reply within %.0fs, expected %r" % (TIMEOUT, pattern))
                    log.append("%s S: %s" % (name, got.replace("\n", "\n   S: ")))
                    if not re.search(pattern, got, re.M):
                        fail(no, "reply %r does not match %r" % (got, pattern))
                elif op == "closed":
                    rest = c.closed()
                    if rest is not None:
                        fail(no, "expected the server to close; got %r" % rest)
                    log.append("%s S: <closed>" % name)
                elif op == "sleep":
                    time.sleep(int(arg) / 1000.0)
    finally:
        for c in conns.values():
            c.close()


def main(argv):
    host, rcpt, hostname = "127.0.0.1", "postmaster@localhost", "localhost"
    args = list(argv)
    while args and args[0].startswith("--"):
        opt, val = args.pop(0), args.pop(0)
        host = val if opt == "--host" else host
        rcpt = val if opt == "--rcpt" else rcpt
        hostname = val if opt == "--hostname" else hostname
    if len(args) < 2:
        print(__doc__)
        return 2
    port, files = int(args[0]), args[1:]
    passed = failed = 0
    for path in files:
        try:
            run(Dialog(path), host, port, {"RCPT": rcpt, "HOST": hostname})
            passed += 1
        except (DialogError, OSError) as e:
            failed += 1
            print("FAIL %s\n%s" % (path, e))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
