"""Delivery into mbox: the two folders per message, several recipients, the
mboxrd format, 8-bit and large bodies (SPEC.md section 4)."""

import hashlib
import mailbox
import os
import random
import re
import stat

import semail_it as it

ALICE = "alice@alice.semail.test"
BOB = "bob@bob.semail.test"


def test_message_lands_in_inbox_and_in_the_recipient_sender_folder(platform, users, server):
    srv = server()
    msg = it.make_message("two folders", b"Hello Alice.\nSecond line.\n", sender="Bob@Example.ORG")
    final = it.send_mail(platform.port, "Bob@Example.ORG", [ALICE], msg)
    assert final.code == 250, final
    assert it.QUEUED_RE.match(final.lines[0]), final

    inbox = platform.messages("alice")
    folder_path = platform.box("alice", "alice@alice.semail.test,bob@example.org")
    assert os.path.exists(folder_path), platform.mbox_files()
    folder = it.read_mbox(folder_path)
    assert len(inbox) == 1 and len(folder) == 1
    for m in (inbox[0], folder[0]):
        assert m.from_line.startswith(b"From Bob@Example.ORG ") or \
            m.from_line.startswith(b"From bob@example.org "), m.from_line
        prefix = it.split_delivered(m, msg)
        assert prefix.startswith(b"Return-Path: <Bob@Example.ORG>\n") or \
            prefix.lower().startswith(b"return-path: <bob@example.org>\n"), prefix
        assert it.HOSTNAME.encode() in prefix
    assert inbox[0].text == folder[0].text
    # Nothing else was written: just the two mboxes (no stray lock or temp files).
    assert platform.mbox_files() == sorted(
        ["alice/INBOX", "alice/alice@alice.semail.test,bob@example.org"])
    # Mail is private to its owner.
    assert stat.S_IMODE(os.stat(platform.box("alice", "INBOX")).st_mode) & 0o077 == 0


def test_python_mailbox_reads_both_folders(platform, users, server):
    srv = server()
    for i in range(3):
        it.send_mail(platform.port, "x@example.org", [ALICE],
                     it.make_message("py %d" % i, sender="x@example.org"))
    for name in ("INBOX", it.folder_name(ALICE, "x@example.org")):
        box = mailbox.mbox(platform.box("alice", name), create=False)
        try:
            subjects = [m["Subject"] for m in box]
        finally:
            box.close()
        assert subjects == ["py 0", "py 1", "py 2"]


def test_several_recipients_each_get_both_copies(platform, users, server):
    carol = platform.create_user("carol", ident="c", domain="carol.example")
    srv = server()
    msg = it.make_message("to three", b"one body for all\n", sender="s@example.org")
    final = it.send_mail(platform.port, "s@example.org", [ALICE, BOB, carol], msg)
    assert final.code == 250, final
    for login, addr in (("alice", ALICE), ("bob", BOB), ("carol", carol)):
        inbox = platform.messages(login)
        folder = it.read_mbox(platform.folder(login, addr, "s@example.org"))
        assert len(inbox) == 1, (login, platform.mbox_files())
        assert len(folder) == 1, (login, platform.mbox_files())
        it.split_delivered(inbox[0], msg)
        it.split_delivered(folder[0], msg)
    assert len(platform.mbox_files()) == 6, platform.mbox_files()


def test_duplicate_recipient_is_delivered_once(platform, users, server):
    srv = server()
    msg = it.make_message("dup", sender="s@example.org")
    final = it.send_mail(platform.port, "s@example.org", [ALICE, "ALICE@Alice.Semail.Test"], msg)
    assert final.code == 250
    assert len(platform.messages("alice")) == 1
    assert len(it.read_mbox(platform.folder("alice", ALICE, "s@example.org"))) == 1


def test_recipient_case_is_folded_in_the_folder_name(platform, users, server):
    srv = server()
    msg = it.make_message("case", sender="s@example.org")
    it.send_mail(platform.port, "s@example.org", ["Alice@ALICE.semail.test"], msg)
    assert len(it.read_mbox(platform.folder("alice", ALICE, "s@example.org"))) == 1


def test_null_sender_is_mailer_daemon(platform, users, server):
    srv = server()
    msg = it.make_message("bounce", sender="MAILER-DAEMON@example.org")
    final = it.send_mail(platform.port, "", [ALICE], msg)
    assert final.code == 250
    folder = it.read_mbox(platform.box("alice", "alice@alice.semail.test,MAILER-DAEMON"))
    assert len(folder) == 1, platform.mbox_files()
    m = platform.messages("alice")[0]
    assert m.from_line.startswith(b"From MAILER-DAEMON "), m.from_line
    assert it.split_delivered(m, msg).startswith(b"Return-Path: <>\n")


def test_folder_name_escapes_unsafe_sender_bytes(platform, users, server):
    srv = server()
    for sender in ("a/b@example.org", "x%y@example.org", "Q+tag@Example.org"):
        msg = it.make_message("esc", sender=sender)
        final = it.send_mail(platform.port, sender, [ALICE], msg)
        assert final.code == 250, (sender, final)
    files = platform.mbox_files()
    for name in ("alice@alice.semail.test,a%2Fb@example.org",
                 "alice@alice.semail.test,x%25y@example.org",
                 "alice@alice.semail.test,q+tag@example.org"):
        assert "alice/" + name in files, (name, files)
    # No path escape: every file is directly in the user's directory.
    assert all(f.count("/") == 1 and f.startswith("alice/") for f in files), files


def test_mboxrd_quotes_from_lines_and_round_trips(platform, users, server):
    srv = server()
    body = (b"From here on, a line that mbox readers would split on.\n"
            b">From already quoted once\n"
            b">>From quoted twice\n"
            b"From\n"
            b"Fromage is not a From_ line\n"
            b" From with a leading space\n"
            b"from lower case\n"
            b"\n"
            b"From the last line\n")
    msg = it.make_message("mboxrd", body, sender="s@example.org")
    assert it.send_mail(platform.port, "s@example.org", [ALICE], msg).code == 250

    raw = open(platform.box("alice"), "rb").read()
    assert b"\n>From here on," in raw
    assert b"\n>>From already quoted once\n" in raw
    assert b"\n>>>From quoted twice\n" in raw
    assert b"\nFrom\n" in raw and b"\nFromage is" in raw and b"\n From with" in raw
    assert b"\n>From the last line\n\n" in raw
    # Undoing mboxrd quoting gives the message back, byte for byte.
    msgs = it.parse_mboxrd(raw)
    assert len(msgs) == 1
    it.split_delivered(msgs[0], msg)
    # Python's mailbox splits correctly but does not unquote: it shows the
    # mboxrd form, with exactly one more '>' on every ^>*From line.
    box = mailbox.mbox(platform.box("alice"), create=False)
    try:
        got = [m for m in box]
    finally:
        box.close()
    assert len(got) == 1
    quoted = re.sub(rb"(?m)^(>*From )", rb">\1", body)
    assert got[0].get_payload(decode=False).encode("latin-1") == quoted


def test_dot_stuffing_is_undone(platform, users, server):
    srv = server()
    body = b".\n..\n.leading dot\n...three\n.\n"
    msg = it.make_message("dots", body, sender="s@example.org")
    assert it.send_mail(platform.port, "s@example.org", [ALICE], msg).code == 250
    it.split_delivered(platform.messages("alice")[0], msg)


def test_8bit_bodies_arrive_byte_exact(platform, users, server):
    srv = server()
    utf8 = "Grüße aus Köln — 日本語のテキスト — Ελληνικά — emoji \U0001F4EC\n".encode("utf-8")
    high = bytes(range(0x80, 0x100))
    raw_lines = b"".join(high[i:i + 32] + b"\n" for i in range(0, len(high), 32))
    ctrl = bytes(b for b in range(1, 0x20) if b not in (0x0A, 0x0D)) + b"\x7f\n"
    body = utf8 + raw_lines + ctrl + utf8
    msg = it.make_message("8bit", body, sender="s@example.org",
                          extra=b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                                b"Content-Transfer-Encoding: 8bit\n")
    final = it.send_mail(platform.port, "s@example.org", [ALICE], msg, mail_params=" BODY=8BITMIME")
    assert final.code == 250, final
    for name in ("INBOX", it.folder_name(ALICE, "s@example.org")):
        msgs = it.read_mbox(platform.box("alice", name))
        assert len(msgs) == 1
        it.split_delivered(msgs[0], msg)
        assert msgs[0].body == body


def test_8bit_header_utf8_subject_is_kept(platform, users, server):
    srv = server()
    msg = it.make_message("Ünïcödé", "Tschüss\n", sender="s@example.org")
    final = it.send_mail(platform.port, "s@example.org", [ALICE], msg, mail_params=" BODY=8BITMIME")
    assert final.code == 250
    it.split_delivered(platform.messages("alice")[0], msg)


def _big_body(size, seed=5321):
    rnd = random.Random(seed)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    lines = []
    total = 0
    n = 0
    while total < size:
        n += 1
        if n % 997 == 0:
            line = b"From line %d that needs quoting" % n
        elif n % 991 == 0:
            line = b">From already quoted %d" % n
        elif n % 983 == 0:
            line = b"."
        elif n % 977 == 0:
            line = b".leading dot %d" % n
        else:
            line = bytes(rnd.choice(alphabet) for _ in range(76)) if n < 200 else \
                lines[n % 199]
        lines.append(line)
        total += len(line) + 1
    return b"\n".join(lines) + b"\n"


def test_20mb_message_arrives_intact(platform, users, server):
    srv = server()
    body = _big_body(20 * 1024 * 1024)
    msg = it.make_message("big", body, sender="s@example.org")
    with it.Smtp(platform.port, timeout=120) as c:
        ehlo = c.ehlo()
        mail, rr, final = c.transaction("s@example.org", [ALICE], msg,
                                        mail_params=" SIZE=%d" % len(it.to_crlf(msg)))
        assert mail.code == 250, mail
        assert final.code == 250, final
        c.quit()
    want = hashlib.sha256(body).hexdigest()
    for name in ("INBOX", it.folder_name(ALICE, "s@example.org")):
        msgs = it.read_mbox(platform.box("alice", name))
        assert len(msgs) == 1
        assert hashlib.sha256(msgs[0].body).hexdigest() == want, "body of %s differs" % name
        it.split_delivered(msgs[0], msg)


def test_messages_are_appended_in_order_and_stay_parseable(platform, users, server):
    srv = server()
    sent = []
    with it.Smtp(platform.port) as c:
        c.ehlo()
        for i in range(10):
            msg = it.make_message("seq %d" % i, b"n=%d\n" % i, sender="s@example.org")
            mail, rr, final = c.transaction("s@example.org", [ALICE], msg)
            assert final.code == 250
            sent.append(msg)
        c.quit()
    got = platform.messages("alice")
    assert len(got) == 10
    for m, msg in zip(got, sent):
        it.split_delivered(m, msg)
