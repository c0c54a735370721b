"""SMTP smuggling (SPEC.md section 5, docs/decisions.md): the end of data is
<CRLF>.<CRLF> and nothing else. A message holding a bare CR or bare LF is
refused whole with 550 5.6.0 when the real end of data arrives: never a
second message, never a split, the text after a fake end is never run as
commands, and the mbox gets nothing."""

import time

import pytest

import semail_it as it

ALICE = "alice@alice.semail.test"

SMUGGLED = (b"MAIL FROM:<evil@evil.test>\r\n"
            b"RCPT TO:<alice@alice.semail.test>\r\n"
            b"DATA\r\n"
            b"From: evil@evil.test\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")

HEAD = b"From: s@example.org\r\nTo: alice@alice.semail.test\r\nSubject: carrier\r\n\r\nhello"

# name -> the data sent after 354, up to (not including) the real end "\r\n.\r\n"
PATTERNS = {
    "lf.lf": HEAD + b"\n.\n" + SMUGGLED,
    "cr.cr": HEAD + b"\r.\r" + SMUGGLED,
    "crlf.lf": HEAD + b"\r\n.\n" + SMUGGLED,
    "lf.crlf": HEAD + b"\n.\r\n" + SMUGGLED,
    "cr.crlf": HEAD + b"\r.\r\n" + SMUGGLED,
    "crlf.cr": HEAD + b"\r\n.\r" + SMUGGLED,
    "lf.lf-no-crlf": (HEAD + b"\n.\n" + SMUGGLED).replace(b"\r\n", b"\n")[:-1],
    "bare-cr": HEAD + b" with a bare\rCR in it",
    "bare-lf": HEAD + b" with a bare\nLF in it",
    "bare-lf-in-header": b"Subject: x\nX-Evil: y\r\n\r\nbody",
    "bare-cr-at-end": HEAD + b"\r",
}


def _run(platform, payload, chunked):
    """Send one carrier message with PAYLOAD, then a legitimate message, then
    QUIT; return the reply codes after the first 354."""
    legit = it.dot_stuff(it.to_crlf(it.make_message("legit", b"fine\n", sender="s@example.org")))
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        c.expect("RCPT TO:<%s>" % ALICE, 250)
        c.expect("DATA", 354)
        data = payload + b"\r\n.\r\n"
        if chunked:
            # One byte per segment around the fake end, to catch a parser that
            # only looks inside a single read.
            for i in range(len(data)):
                c.send(data[i:i + 1])
                if i % 16 == 0:
                    time.sleep(0.001)
        else:
            c.send(data)
        first = c.reply()
        # Whatever the server thinks, nothing else may be pending: the smuggled
        # commands must have been data. A legitimate transaction follows.
        c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@alice.semail.test>\r\nDATA\r\n")
        group = c.replies(3)
        c.send(legit + b".\r\nQUIT\r\n")
        codes, raw, closed = c.all_replies_until_eof()
        return first, [r.code for r in group], codes, raw, closed


@pytest.mark.parametrize("chunked", [False, True], ids=["one-write", "byte-by-byte"])
@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_bare_line_ends_never_end_or_split_data(platform, users, server, name, chunked):
    srv = server()
    first, group, rest, raw, closed = _run(platform, PATTERNS[name], chunked)
    assert first.code == 550 and first.enhanced == "5.6.0", \
        "%s: want 550 5.6.0 at the real end of data, got %r" % (name, first)
    assert group == [250, 250, 354], "%s: replies to the next group: %r (smuggled replies?)" % (
        name, group)
    assert rest == [250, 221], "%s: %r" % (name, raw)
    assert closed
    msgs = platform.messages("alice")
    subjects = [m.header_value("Subject") for m in msgs]
    assert subjects == ["legit"], "%s: INBOX holds %r" % (name, subjects)
    folder = it.read_mbox(platform.folder("alice", ALICE, "s@example.org"))
    assert [m.header_value("Subject") for m in folder] == ["legit"]
    assert not any("evil" in f for f in platform.mbox_files()), platform.mbox_files()
    for m in msgs:
        assert b"smuggled" not in m.text


def test_smuggling_with_pipelined_quit_is_not_executed(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@alice.semail.test>\r\nDATA\r\n")
        assert [r.code for r in c.replies(3)] == [250, 250, 354]
        c.send(HEAD + b"\n.\nQUIT\r\n")
        # If "\n.\n" ended the data, QUIT would be run and the connection closed.
        time.sleep(0.3)
        c.send(b"NOOP\r\n\r\n.\r\n")
        r = c.reply()
        assert r.code == 550 and r.enhanced == "5.6.0", r
        assert c.cmd("NOOP").code == 250
        c.quit()
    assert platform.mbox_files() == []


def test_dot_alone_inside_a_line_is_data(platform, users, server):
    srv = server()
    # Stuffed dots: "..\r\n" is a line ".", "...\r\n" is "..": never the end.
    body = b"a\r\n..\r\n...\r\n.. .\r\nend"
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@alice.semail.test>\r\nDATA\r\n")
        assert [r.code for r in c.replies(3)] == [250, 250, 354]
        c.send(b"Subject: dots\r\n\r\n" + body + b"\r\n.\r\n")
        assert c.reply().code == 250
        c.quit()
    m = platform.messages("alice")[0]
    assert m.body == b"a\n.\n..\n. .\nend\n"
