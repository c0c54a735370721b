"""Real faults, produced rather than simulated (SPEC.md section 4: appends are
all-or-nothing; a full filesystem answers 452 4.2.2): SIGKILL of the server
mid-DATA and mid-append, and a mail_root on a 2 MB tmpfs filled to the brim."""

import os
import subprocess
import time

import pytest

import semail_it as it

ALICE = "alice@alice.semail.test"
BOB = "bob@bob.semail.test"


def test_kill_9_in_the_middle_of_data_leaves_no_partial_message(platform, users, server):
    srv = server()
    first = it.make_message("first", sender="s@example.org")
    assert it.send_mail(platform.port, "s@example.org", [ALICE, BOB], first).code == 250
    before = {f: open(os.path.join(platform.mail_root, f), "rb").read()
              for f in platform.mbox_files()}

    body = b"".join(b"line %06d of a message that never ends\n" % i for i in range(20000))
    msg = it.dot_stuff(it.to_crlf(it.make_message("killed", body, sender="s@example.org")))
    c = it.Smtp(platform.port, timeout=20)
    c.ehlo()
    c.expect("MAIL FROM:<s@example.org>", 250)
    c.expect("RCPT TO:<%s>" % ALICE, 250)
    c.expect("RCPT TO:<%s>" % BOB, 250)
    c.expect("DATA", 354)
    c.send(msg[:len(msg) // 2])
    time.sleep(0.3)
    srv.kill()
    c.close()

    after = {f: open(os.path.join(platform.mail_root, f), "rb").read()
             for f in platform.mbox_files() if not f.endswith(".lock")}
    assert after == before, "an mbox changed although the message never completed"

    srv2 = server()
    second = it.make_message("second", sender="s@example.org")
    assert it.send_mail(platform.port, "s@example.org", [ALICE, BOB], second).code == 250
    for login in ("alice", "bob"):
        got = platform.messages(login)
        assert [m.header_value("Subject") for m in got] == ["first", "second"], login
        it.split_delivered(got[1], second)


def test_kill_9_during_the_append_leaves_whole_messages_only(platform, users, server):
    """SIGKILL as soon as the big message starts reaching the mbox. Whatever
    the moment, after a restart and one more delivery every mbox parses into
    complete messages: 'first', maybe 'big' (whole), then 'after'."""
    srv = server()
    first = it.make_message("first", sender="s@example.org")
    assert it.send_mail(platform.port, "s@example.org", [ALICE], first).code == 250
    size0 = os.path.getsize(platform.box("alice"))

    body = b"".join(b"%08d big message line, padded to make it longer than usual ....\n" % i
                    for i in range(150000))
    big = it.make_message("big", body, sender="s@example.org")
    c = it.Smtp(platform.port, timeout=60)
    c.ehlo()
    c.expect("MAIL FROM:<s@example.org>", 250)
    c.expect("RCPT TO:<%s>" % ALICE, 250)
    c.expect("DATA", 354)
    c.send(it.dot_stuff(it.to_crlf(big)) + b".\r\n")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if os.path.getsize(platform.box("alice")) > size0:
            break
        time.sleep(0.0005)
    srv.kill()
    c.close()
    torn = []
    for name in ("INBOX", it.folder_name(ALICE, "s@example.org")):
        try:
            it.read_mbox(platform.box("alice", name))
        except AssertionError:
            torn.append(name)
    locks = [f for f in platform.mbox_files() if f.endswith(".lock")]

    srv2 = server()
    after = it.make_message("after", sender="s@example.org")
    r = it.send_mail(platform.port, "s@example.org", [ALICE], after)
    assert r.code == 250, (
        "after SIGKILL mid-append (torn at kill time: %s; dot-locks left: %s), delivery "
        "answers %r" % (torn, locks, r))
    for name in ("INBOX", it.folder_name(ALICE, "s@example.org")):
        msgs = it.read_mbox(platform.box("alice", name))
        subjects = [m.header_value("Subject") for m in msgs]
        glued = any(b"\nSubject: after\n" in m.text for m in msgs[1:] if m.header_value("Subject") == "big")
        assert not glued, "%s: the killed server left a torn append and the next message was glued to it" % name
        assert subjects in (["first", "after"], ["first", "big", "after"]), (name, subjects)
        if "big" in subjects:
            it.split_delivered(msgs[1], big)
        it.split_delivered(msgs[-1], after)


@pytest.fixture
def small_mail_root(platform):
    if os.geteuid() != 0:
        pytest.skip("a full filesystem needs root to mount a tmpfs")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs",
                        platform.mail_root], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % p.stderr.decode().strip())
    try:
        yield platform
    finally:
        p = subprocess.run(["umount", platform.mail_root], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        if p.returncode != 0:
            subprocess.run(["umount", "-l", platform.mail_root], timeout=30)


def test_full_filesystem_answers_452_4_2_2_and_keeps_every_accepted_message(
        small_mail_root, server):
    platform = small_mail_root
    platform.create_user("alice")
    srv = server()
    accepted = []
    refused = None
    with it.Smtp(platform.port, timeout=30) as c:
        c.ehlo()
        for i in range(60):
            body = b"".join(b"message %03d line %04d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
                            % (i, j) for j in range(1500))
            msg = it.make_message("fill %d" % i, body, sender="s@example.org")
            mail, rr, final = c.transaction("s@example.org", [ALICE], msg)
            assert final is not None, (mail, rr)
            if final.code == 250:
                accepted.append(msg)
                continue
            refused = final
            break
        assert refused is not None, "2 MB never filled up"
        assert refused.code == 452 and refused.enhanced == "4.2.2", refused
        # The session survives the error; a message that is too big again still gets 452.
        assert c.cmd("NOOP").code == 250
        c.quit()
    assert accepted, "not even one message fit"
    for name in ("INBOX", it.folder_name(ALICE, "s@example.org")):
        msgs = it.read_mbox(platform.box("alice", name))
        assert len(msgs) == len(accepted), (name, len(msgs), len(accepted))
        for m, sent in zip(msgs, accepted):
            it.split_delivered(m, sent)
    assert not [f for f in platform.mbox_files() if f.endswith(".lock")], platform.mbox_files()
    # Room made (a mailbox emptied): delivery works again without a restart.
    os.truncate(platform.box("alice", it.folder_name(ALICE, "s@example.org")), 0)
    os.truncate(platform.box("alice"), 0)
    msg = it.make_message("after room", sender="s@example.org")
    assert it.send_mail(platform.port, "s@example.org", [ALICE], msg).code == 250
    assert [m.header_value("Subject") for m in platform.messages("alice")] == ["after room"]
    srv.stop()
