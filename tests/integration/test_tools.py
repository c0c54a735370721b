"""Real mail software against semail-inbound: swaks and Postfix's
smtp-source send, mutt and Python's mailbox read what was stored."""

import mailbox
import os
import shutil

import pytest

import semail_it as it

ALICE = "alice@alice.semail.test"
SWAKS = shutil.which("swaks")
SMTP_SOURCE = shutil.which("smtp-source") or (
    "/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source") else None)
MUTT = shutil.which("mutt")

need_swaks = pytest.mark.skipif(not SWAKS, reason="swaks is not installed (apt-get install swaks)")
need_smtp_source = pytest.mark.skipif(
    not SMTP_SOURCE, reason="smtp-source is not installed (apt-get install postfix)")
need_mutt = pytest.mark.skipif(not MUTT, reason="mutt is not installed (apt-get install mutt)")


def _swaks(platform, *args, server="127.0.0.1"):
    argv = [SWAKS, "--server", server, "--port", str(platform.port), "--timeout", "30",
            "--helo", "swaks.example.org"] + list(args)
    return it.run(argv, timeout=60)


@need_swaks
@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipeline"])
def test_swaks_delivers(platform, users, server, pipeline):
    srv = server()
    args = ["--from", "swaks@example.org", "--to", ALICE,
            "--header", "Subject: via swaks", "--body", "Sent by swaks.\nFrom here.\n"]
    if pipeline:
        args.append("--pipeline")
    p = _swaks(platform, *args)
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    assert "250 2.0.0 Ok: queued as" in out, out
    if pipeline:
        assert "PIPELINING" in out
    for name in ("INBOX", it.folder_name(ALICE, "swaks@example.org")):
        msgs = it.read_mbox(platform.box("alice", name))
        assert len(msgs) == 1
        assert msgs[0].header_value("Subject") == "via swaks"
        assert b"Sent by swaks.\nFrom here.\n" in msgs[0].body


@need_swaks
def test_swaks_over_ipv6(platform, users, server):
    srv = server()
    p = _swaks(platform, "-6", "--from", "swaks@example.org", "--to", ALICE,
               "--header", "Subject: v6", "--body", "over IPv6\n", server="::1")
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    m = platform.messages("alice")[0]
    assert m.header_value("Subject") == "v6"
    assert b"over IPv6\n" in m.body


@need_swaks
def test_swaks_sees_unknown_user_and_relay_refused(platform, users, server):
    srv = server()
    for rcpt, code in (("nobody@alice.semail.test", "550 5.1.1"), ("bob@evil.test", "550 5.7.1")):
        p = _swaks(platform, "--from", "swaks@example.org", "--to", rcpt)
        out = p.stdout.decode()
        assert p.returncode != 0, out
        assert code in out, out
    assert platform.mbox_files() == []


@need_smtp_source
def test_smtp_source_100_messages_5_sessions(platform, users, server):
    srv = server()
    p = it.run([SMTP_SOURCE, "-s", "5", "-m", "100", "-l", "1024", "-f", "a@x.test",
                "-t", ALICE, "127.0.0.1:%d" % platform.port], timeout=180)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    for name in ("INBOX", it.folder_name(ALICE, "a@x.test")):
        path = platform.box("alice", name)
        box = mailbox.mbox(path, create=False)
        try:
            n = len(box)
        finally:
            box.close()
        assert n == 100, (name, n)
        msgs = it.read_mbox(path)
        assert len(msgs) == 100
        for m in msgs:
            assert m.from_line.startswith(b"From a@x.test ")
            # -l 1024 counts CRLF line ends; stored lines end in LF.
            assert len(m.body) >= 1000


@need_smtp_source
def test_smtp_source_over_ipv6_persistent_sessions(platform, users, server):
    srv = server()
    p = it.run([SMTP_SOURCE, "-6", "-d", "-s", "4", "-m", "40", "-l", "300", "-f", "b@x.test",
                "-t", ALICE, "[::1]:%d" % platform.port], timeout=120)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    assert len(platform.messages("alice")) == 40


@need_mutt
def test_mutt_reads_inbox_and_folder(platform, users, server, tmp_path):
    srv = server()
    subjects = ["mutt one", "mutt two: From the start", "mutt three"]
    for s in subjects:
        body = b"From a line that mboxrd quotes\n>From and one already quoted\nbye\n"
        it.send_mail(platform.port, "m@example.org", [ALICE],
                     it.make_message(s, body, sender="m@example.org"))
    for name in ("INBOX", it.folder_name(ALICE, "m@example.org")):
        got = it.mutt_read(platform.box("alice", name), str(tmp_path))
        assert len(got) == 3, (name, got)
        for raw, s in zip(got, subjects):
            assert ("Subject: %s\n" % s).encode() in raw, raw
            # mutt reads mbox as mboxo/mboxrd alike: the quoted form, one message each.
            assert b"\n>From a line that mboxrd quotes\n" in raw, raw
            assert b"\n>>From and one already quoted\n" in raw, raw


@need_mutt
@need_smtp_source
def test_mutt_counts_what_smtp_source_sent(platform, users, server, tmp_path):
    srv = server()
    p = it.run([SMTP_SOURCE, "-s", "3", "-m", "30", "-l", "512", "-f", "a@x.test",
                "-t", ALICE, "127.0.0.1:%d" % platform.port], timeout=120)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    got = it.mutt_read(platform.box("alice"), str(tmp_path))
    assert len(got) == 30
