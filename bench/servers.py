"""servers.py - the mail servers bench/run-all compares, each started in a
scratch directory on loopback and stopped afterwards.

Contract: every class has start(), stop(), port, host, root_pid() (the process
whose tree is the server, for CPU and RSS), wipe() (empty the mailboxes),
delivered() (messages in the mailboxes) and queued() (messages accepted but
not yet delivered; 0 for a server whose 250 means delivered). Nothing outside
the scratch directory is written: Postfix and OpenSMTPD run in a private mount
namespace (unshare --mount) where a private /etc/passwd and /etc/group (the
machine's plus 100 mail users and OpenSMTPD's two users) are bind-mounted, and
OpenSMTPD's compiled-in paths (/var/spool/smtpd, /var/mail, /run,
/usr/libexec/opensmtpd, /var/lib/opensmtpd) are bind or overlay mounts of
scratch directories. /etc/postfix is never read for the configuration and
never written.
"""

import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

USERS = ["u%03d" % i for i in range(100)]
UID0 = 30000  # uids of the private mail users: u000 = 30000
DOMAIN = "semail.test"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(host, port, proc=None, timeout=30.0, what="server"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with %d" % (what, proc.returncode))
        try:
            s = socket.create_connection((host, port), timeout=5)
        except OSError:
            time.sleep(0.05)
            continue
        s.recv(512)
        s.sendall(b"QUIT\r\n")
        try:
            s.recv(512)
        except OSError:
            pass
        s.close()
        return
    raise RuntimeError("%s did not answer on %s:%d" % (what, host, port))


def count_mbox(path):
    """Messages in an mbox: a 'From ' line at the start or after an empty line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    return data.count(b"\n\nFrom ") + (1 if data.startswith(b"From ") else 0)


def files_under(top):
    n = 0
    for _, _, files in os.walk(top):
        n += len(files)
    return n


def stop_proc(proc, timeout=30):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def private_accounts(d, extra=()):
    """A passwd and a group file: the machine's plus the mail users (and EXTRA system users)."""
    passwd, group = os.path.join(d, "passwd"), os.path.join(d, "group")
    with open("/etc/passwd") as f:
        pw = f.read()
    with open("/etc/group") as f:
        gr = f.read()
    names = {line.split(":")[0] for line in pw.splitlines()}
    gnames = {line.split(":")[0] for line in gr.splitlines()}
    add_pw, add_gr = [], []
    for i, name in enumerate(extra):
        if name not in names:
            add_pw.append("%s:x:%d:%d::/nonexistent:/usr/sbin/nologin" % (name, 29990 + i, 29990 + i))
        if name not in gnames:
            add_gr.append("%s:x:%d:" % (name, 29990 + i))
    for i, u in enumerate(USERS):
        add_pw.append("%s:x:%d:%d::%s/home:/bin/sh" % (u, UID0 + i, UID0, d))
    add_gr.append("benchmail:x:%d:" % UID0)
    with open(passwd, "w") as f:
        f.write(pw.rstrip("\n") + "\n" + "\n".join(add_pw) + "\n")
    with open(group, "w") as f:
        f.write(gr.rstrip("\n") + "\n" + "\n".join(add_gr) + "\n")
    return passwd, group


def loopback_resolv(d, nameserver=None):
    """A resolv.conf that keeps DNS on loopback: NAMESERVER, or 127.0.0.1 where
    nothing listens on port 53 (a look-up fails at once instead of leaving the
    machine)."""
    path = os.path.join(d, "resolv.conf")
    with open(path, "w") as f:
        f.write("nameserver %s\noptions attempts:1 timeout:1\nlookup file bind\n" % (
            nameserver or "127.0.0.1"))
    return path


def in_namespace(mounts, argv):
    """argv for running ARGV in a private mount namespace after MOUNTS
    (shell command lines, run in order)."""
    script = " && ".join(mounts + ['exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "ns"] + list(argv)


# ---- the protocol ceiling ----------------------------------------------------


class Sink:
    name = "smtp-sink"

    def __init__(self, root, host="127.0.0.1"):
        self.root = root
        self.host = host
        self.port = free_port(host)
        self.proc = None
        self.out = None

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        self.out = open(os.path.join(self.root, "sink.out"), "wb")
        # -c: running counters on stdout (the outbound bench reads them).
        self.proc = subprocess.Popen(["smtp-sink", "-c", "-u", "nobody",
                                      "%s:%d" % (self.host, self.port), "4096"],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        wait_port(self.host, self.port, self.proc, what="smtp-sink")
        return self

    def received(self):
        """Messages received so far (from the last counter line of -c)."""
        self.out.flush()
        try:
            with open(os.path.join(self.root, "sink.out"), "rb") as f:
                f.seek(max(0, os.path.getsize(f.name) - 4096))
                tail = f.read().replace(b"\r", b"\n").split(b"\n")
        except FileNotFoundError:
            return 0
        for line in reversed(tail):
            if b"mesg=" in line:
                return int(line.split(b"mesg=")[1].split()[0])
        return 0

    def root_pid(self):
        return self.proc.pid

    def wipe(self):
        pass

    def delivered(self):
        return None

    def queued(self):
        return 0

    def stop(self):
        stop_proc(self.proc)
        if self.out:
            self.out.close()


# ---- SEMail -------------------------------------------------------------------


class SEMailInbound:
    name = "semail-inbound"

    def __init__(self, root, bindir, max_conn=1000, wrapper=()):
        self.root = root
        self.bindir = bindir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.max_conn = max_conn
        self.wrapper = list(wrapper)
        self.proc = None
        self.conf = os.path.join(root, "semail.conf")

    def write_config(self, extra=""):
        os.makedirs(os.path.join(self.root, "state"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "mail"), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write("""[global]
hostname = mx.semail.test
domain = %(domain)s
state_dir = %(root)s/state
mail_root = %(root)s/mail
user =

[inbound]
listen = 127.0.0.1:%(port)d
max_connections = %(max)d
max_connections_per_client = %(max)d

[storage]
backend = directory

[containers]
enabled = no

[dns]
enabled = no
%(extra)s""" % {"root": self.root, "port": self.port, "max": self.max_conn, "domain": DOMAIN,
                "extra": extra})

    def create_users(self):
        admin = os.path.join(self.bindir, "semail-admin")
        for u in USERS:
            if os.path.isdir(os.path.join(self.root, "mail", u)):
                continue
            subprocess.run([admin, "-c", self.conf, "user", "create", u, "--id", u,
                            "--subdomain", u], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    def start(self):
        if not os.path.exists(self.conf):
            self.write_config()
        self.create_users()
        self.err = open(os.path.join(self.root, "inbound.log"), "ab")
        self.proc = subprocess.Popen(self.wrapper + [os.path.join(self.bindir, "semail-inbound"),
                                                     "-c", self.conf],
                                     stdout=self.err, stderr=self.err)
        wait_port(self.host, self.port, self.proc, timeout=120, what="semail-inbound")
        return self

    def root_pid(self):
        return self.proc.pid

    def mbox(self, u):
        return os.path.join(self.root, "mail", u, "INBOX")

    def wipe(self):
        for u in USERS:
            d = os.path.join(self.root, "mail", u)
            for name in os.listdir(d):
                os.unlink(os.path.join(d, name))

    def delivered(self):
        return sum(count_mbox(self.mbox(u)) for u in USERS)

    def queued(self):
        return 0

    def stop(self):
        stop_proc(self.proc, timeout=120)
        self.err.close()
        return self.proc.returncode


class SEMailOutbound:
    name = "semail-outbound"

    def __init__(self, root, bindir, resolver, remote_port):
        self.root = root
        self.bindir = bindir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.resolver = resolver
        self.remote_port = remote_port
        self.conf = os.path.join(root, "semail.conf")
        self.proc = None

    def start(self):
        os.makedirs(os.path.join(self.root, "state"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "mail"), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write("""[global]
hostname = out.semail.test
domain = %(domain)s
state_dir = %(root)s/state
mail_root = %(root)s/mail
user =

[inbound]
listen = 127.0.0.1:%(iport)d
max_connections = 1000
max_connections_per_client = 1000

[outbound]
listen = 127.0.0.1:%(port)d
listen_tls =
trusted_networks = 127.0.0.0/8
resolver = %(resolver)s
remote_port = %(rport)d
retry_schedule = 1s, 2s

[storage]
backend = directory

[containers]
enabled = no

[dns]
enabled = no
""" % {"root": self.root, "port": self.port, "iport": free_port(), "domain": DOMAIN,
       "resolver": self.resolver, "rport": self.remote_port})
        self.err = open(os.path.join(self.root, "outbound.log"), "ab")
        self.proc = subprocess.Popen([os.path.join(self.bindir, "semail-outbound"), "-c",
                                      self.conf], stdout=self.err, stderr=self.err)
        wait_port(self.host, self.port, self.proc, timeout=60, what="semail-outbound")
        return self

    def root_pid(self):
        return self.proc.pid

    def queued(self):
        return files_under(os.path.join(self.root, "state", "queue", "msg"))

    def stop(self):
        stop_proc(self.proc, timeout=120)
        self.err.close()


# ---- Postfix ------------------------------------------------------------------

POSTFIX_MASTER = """\
%(listen)s inet  n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """Postfix as Debian ships it, from its own configuration directory:
    smtpd -> cleanup -> qmgr -> local(8) into mbox files in a private spool
    (dot-lock + fcntl lock, fsync before the queue file goes), and smtp(8)
    for relayed mail (relayhost = RELAYHOST, an MX look-up through the
    resolver in RESOLV_CONF)."""
    name = "postfix"

    def __init__(self, root, relayhost="", nameserver=None):
        self.root = root
        self.host = "127.0.0.1"
        self.port = free_port()
        self.relayhost = relayhost
        self.nameserver = nameserver
        self.conf_dir = os.path.join(root, "etc")
        self.spool = os.path.join(root, "spool")
        self.queue = os.path.join(root, "queue")

    def write_config(self):
        for d in (self.conf_dir, self.spool, self.queue, os.path.join(self.root, "data")):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.spool, 0o1777)
        shutil.chown(os.path.join(self.root, "data"), user="postfix")
        domains = ", ".join("%s.%s" % (u, DOMAIN) for u in USERS)
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write("""compatibility_level = 3.6
queue_directory = %(q)s
data_directory = %(root)s/data
mail_spool_directory = %(spool)s
maillog_file = %(root)s/postfix.log
maillog_file_prefixes = %(root)s
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pf.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination = %(domains)s
mynetworks = 127.0.0.0/8
relayhost = %(relay)s
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
append_dot_mydomain = no
mailbox_size_limit = 0
message_size_limit = 0
""" % {"q": self.queue, "root": self.root, "spool": self.spool, "domains": domains,
                "relay": self.relayhost})
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER % {"listen": "127.0.0.1:%d" % self.port})

    def start(self):
        self.write_config()
        passwd, group = private_accounts(self.root)
        mounts = ["mount --bind %s /etc/passwd" % passwd, "mount --bind %s /etc/group" % group]
        mounts.append("mount --bind %s /etc/resolv.conf" % loopback_resolv(self.root,
                                                                             self.nameserver))
        out = subprocess.run(in_namespace(mounts, ["postfix", "-c", self.conf_dir, "start"]),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if out.returncode != 0:
            raise RuntimeError("postfix start: %s" % out.stdout.decode())
        wait_port(self.host, self.port, what="postfix")
        return self

    def root_pid(self):
        with open(os.path.join(self.queue, "pid", "master.pid")) as f:
            return int(f.read().split()[0])

    def wipe(self):
        for name in os.listdir(self.spool):
            os.unlink(os.path.join(self.spool, name))

    def delivered(self):
        return sum(count_mbox(os.path.join(self.spool, u)) for u in USERS)

    def queued(self):
        return sum(files_under(os.path.join(self.queue, d))
                   for d in ("maildrop", "incoming", "active", "deferred", "hold"))

    def stop(self):
        pid = self.root_pid()
        subprocess.run(["postfix", "-c", self.conf_dir, "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while time.monotonic() < end and os.path.exists("/proc/%d" % pid):
            time.sleep(0.1)


# ---- OpenSMTPD ------------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438


def raise_backlog(pids, port, backlog=4096):
    """listen() again, with BACKLOG, on the listening socket of PORT held by
    one of PIDS (OpenSMTPD listens with a backlog of 5): the socket is taken
    with pidfd_getfd(2)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                p = line.split()
                if p[3] == "0A" and int(p[1].split(":")[1], 16) == port:
                    inodes.add(p[9])
    done = 0
    for pid in pids:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if not (target.startswith("socket:[") and target[8:-1] in inodes):
                continue
            pidfd = os.pidfd_open(pid)
            try:
                mine = libc.syscall(SYS_pidfd_getfd, pidfd, int(fd), 0)
            finally:
                os.close(pidfd)
            if mine < 0:
                continue
            s = socket.socket(fileno=mine)
            s.listen(backlog)
            s.close()
            inodes.discard(target[8:-1])
            done += 1
    return done


def tree_pids(root):
    """ROOT and its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class OpenSMTPD:
    """Debian's opensmtpd, unpacked (it conflicts with postfix), run with
    `smtpd -d -f FILE` in a private mount namespace: an mbox action
    (mail.local: lockspool + fsync) for the 100 domains."""
    name = "opensmtpd"

    def __init__(self, root, pkgroot):
        self.root = root
        self.pkg = pkgroot
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc = None
        self.backlog_raised = 0

    @staticmethod
    def unpack(cache):
        """Unpack Debian's opensmtpd into CACHE/root (downloaded once)."""
        root = os.path.join(cache, "root")
        if os.path.exists(os.path.join(root, "usr", "sbin", "smtpd")):
            return root
        os.makedirs(cache, exist_ok=True)
        if not glob.glob(os.path.join(cache, "opensmtpd_*.deb")):
            subprocess.run(["apt-get", "download", "opensmtpd"], cwd=cache, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deb = glob.glob(os.path.join(cache, "opensmtpd_*.deb"))[0]
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        return root

    @staticmethod
    def version(pkgroot):
        cache = os.path.dirname(pkgroot)
        deb = glob.glob(os.path.join(cache, "opensmtpd_*.deb"))[0]
        return subprocess.run(["dpkg-deb", "-f", deb, "Version"],
                              stdout=subprocess.PIPE).stdout.decode().strip()

    def start(self):
        r = self.root
        for d in ("spool", "mail", "run", "varlib/opensmtpd/empty", "ovl"):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        os.chmod(os.path.join(r, "spool"), 0o711)
        os.chmod(os.path.join(r, "mail"), 0o1777)
        with open(os.path.join(r, "domains"), "w") as f:
            f.write("".join("%s.%s\n" % (u, DOMAIN) for u in USERS))
        conf = os.path.join(r, "smtpd.conf")
        with open(conf, "w") as f:
            # As many messages per session as smtp-source -d sends (default 100).
            f.write("""table doms file:%(r)s/domains
smtp limit max-mails 1000000 max-rcpt 1000
listen on 127.0.0.1 port %(port)d
action "mbox" mbox
match from any for domain <doms> action "mbox"
""" % {"r": r, "port": self.port})
        passwd, group = private_accounts(r, extra=("opensmtpd", "opensmtpq"))
        lib = self.pkg + "/usr/libexec"
        mounts = ["mount --bind %s /etc/passwd" % passwd,
                  "mount --bind %s /etc/group" % group,
                  "mount --bind %s /etc/resolv.conf" % loopback_resolv(r),
                  "mount --bind %s/spool /var/spool" % r,
                  "mkdir -p /var/spool/smtpd && chmod 711 /var/spool/smtpd",
                  "mount --bind %s/mail /var/mail" % r,
                  "mount --bind %s/run /run" % r,
                  "mount -t overlay overlay -o lowerdir=%s:/usr/libexec /usr/libexec" % lib,
                  "mount -t overlay overlay -o lowerdir=%s/varlib:/var/lib /var/lib" % r]
        self.err = open(os.path.join(r, "smtpd.log"), "ab")
        self.proc = subprocess.Popen(in_namespace(mounts, [self.pkg + "/usr/sbin/smtpd", "-d",
                                                           "-f", conf]),
                                     stdout=self.err, stderr=self.err)
        wait_port(self.host, self.port, self.proc, what="opensmtpd")
        self.backlog_raised = raise_backlog(tree_pids(self.proc.pid), self.port)
        return self

    def root_pid(self):
        return self.proc.pid

    def wipe(self):
        d = os.path.join(self.root, "mail")
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))

    def delivered(self):
        return sum(count_mbox(os.path.join(self.root, "mail", u)) for u in USERS)

    def queued(self):
        spool = os.path.join(self.root, "spool", "smtpd")
        return files_under(os.path.join(spool, "queue")) + files_under(
            os.path.join(spool, "incoming"))

    def stop(self):
        stop_proc(self.proc)
        self.err.close()


# ---- BIND9 ----------------------------------------------------------------------


class Named:
    """BIND9 authoritative for `test.` on ADDR:53 (port 53 so that Postfix's
    resolver, which has no port setting, can use it; ADDR must be an address
    of an interface: named drops the others at its next interface scan)."""

    def __init__(self, root, addr, records):
        self.root = root
        self.addr = addr
        self.records = records
        self.proc = None

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        zone = os.path.join(self.root, "test.zone")
        with open(zone, "w") as f:
            f.write("$TTL 300\n@ IN SOA ns.test. hostmaster.test. ( 1 3600 600 86400 60 )\n"
                    "@ IN NS ns.test.\nns IN A %s\n" % self.addr)
            f.write("".join("%s IN %s %s\n" % r for r in self.records))
        conf = os.path.join(self.root, "named.conf")
        with open(conf, "w") as f:
            f.write("""options {
  directory "%(d)s"; pid-file "%(d)s/named.pid";
  session-keyfile "%(d)s/session.key"; managed-keys-directory "%(d)s";
  listen-on port 53 { %(a)s; }; listen-on-v6 { none; };
  recursion no; dnssec-validation no; notify no; allow-query { any; };
};
controls { };
zone "test" { type primary; file "%(z)s"; };
""" % {"d": self.root, "a": self.addr, "z": zone})
        self.err = open(os.path.join(self.root, "named.log"), "wb")
        self.proc = subprocess.Popen(["named", "-g", "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=self.err, stderr=self.err)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("named exited with %d" % self.proc.returncode)
            out = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "@" + self.addr,
                                  "test", "SOA"], stdout=subprocess.PIPE).stdout
            if out.strip():
                return self
            time.sleep(0.2)
        raise RuntimeError("named did not answer")

    def stop(self):
        stop_proc(self.proc)
        self.err.close()


def which(name):
    return shutil.which(name) or os.path.join("/usr/sbin", name)
