"""The server runtime: many clients at once, connection caps, timeouts,
shutdown on SIGTERM, registry changes seen without a restart (SPEC.md
sections 2 and 5)."""

import mailbox
import signal
import socket
import threading
import time

import semail_it as it

ALICE = "alice@alice.semail.test"
BOB = "bob@bob.semail.test"


def test_20_clients_25_messages_each_every_message_exactly_once(platform, users, server):
    srv = server()
    clients, per_client = 20, 25
    senders = ["sender%d@senders.example" % k for k in range(4)]
    errors = []

    def client(n):
        try:
            sender = senders[n % len(senders)]
            with it.Smtp(platform.port, timeout=120) as c:
                c.ehlo("client%d.example" % n)
                for i in range(per_client):
                    msg = it.make_message("c%d m%d" % (n, i), b"client %d message %d\n" % (n, i),
                                          sender=sender, msgid="<c%d.m%d@it.semail.test>" % (n, i),
                                          extra=b"X-Counter: %d-%d\n" % (n, i))
                    mail, rr, final = c.transaction(sender, [ALICE, BOB], msg)
                    if final is None or final.code != 250:
                        errors.append((n, i, mail, rr, final))
                c.quit()
        except Exception as e:  # reported below, with the others
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "clients still running after 240 s"
    assert not errors, errors[:5]

    want = {"<c%d.m%d@it.semail.test>" % (n, i) for n in range(clients) for i in range(per_client)}
    for login, rcpt in (("alice", ALICE), ("bob", BOB)):
        boxes = {"INBOX": want}
        for k, sender in enumerate(senders):
            boxes[it.folder_name(rcpt, sender)] = {
                "<c%d.m%d@it.semail.test>" % (n, i)
                for n in range(k, clients, len(senders)) for i in range(per_client)}
        for name, expected in boxes.items():
            path = platform.box(login, name)
            box = mailbox.mbox(path, create=False)
            try:
                ids = []
                for m in box:
                    ids.append(m["Message-ID"])
                    n, i = map(int, m["X-Counter"].split("-"))
                    assert m.get_payload() == "client %d message %d\n" % (n, i), path
            finally:
                box.close()
            assert len(ids) == len(expected), (path, len(ids), len(expected))
            assert set(ids) == expected, path
            # And the strict parser agrees (no torn appends, From_ lines right).
            assert len(it.read_mbox(path)) == len(expected)
    assert not [f for f in platform.mbox_files() if f.endswith(".lock")]


def _connect_expect(port, code, source=None, timeout=5.0):
    c = it.Smtp(port, source=source, timeout=timeout)
    assert c.greeting.code == code, c.greeting
    return c


def test_too_many_connections_get_421_4_7_0(platform, users, server):
    srv = server(max_connections=3, max_connections_per_client=3)
    # Three client addresses, so that only the global cap can refuse the fourth.
    held = [_connect_expect(platform.port, 220, source="127.0.0.%d" % i) for i in (1, 2, 3)]
    try:
        c = it.Smtp(platform.port, source="127.0.0.4", timeout=5)
        assert c.greeting.code == 421 and c.greeting.enhanced == "4.7.0", c.greeting
        data, closed = c.read_until_eof(5)
        assert closed, "server must close after 421"
        c.close()
        # The held sessions still work.
        assert held[0].cmd("NOOP").code == 250
    finally:
        for c in held:
            c.quit()
    # Their slots come back.
    end = time.monotonic() + 10
    while True:
        c = it.Smtp(platform.port, timeout=5)
        code = c.greeting.code
        c.quit()
        if code == 220 or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert code == 220


def test_too_many_connections_from_one_client_get_421(platform, users, server):
    srv = server(max_connections=50, max_connections_per_client=2)
    held = [_connect_expect(platform.port, 220, source="127.0.0.1") for _ in range(2)]
    try:
        c = it.Smtp(platform.port, source="127.0.0.1", timeout=5)
        assert c.greeting.code == 421 and c.greeting.enhanced == "4.7.0", c.greeting
        c.close()
        # Another client address is not affected.
        other = _connect_expect(platform.port, 220, source="127.0.0.2")
        other.ehlo()
        mail, rr, final = other.transaction("s@example.org", [ALICE], it.make_message("other"))
        assert final.code == 250
        other.quit()
    finally:
        for c in held:
            c.quit()


def test_idle_client_gets_421_4_4_2_then_close(platform, users, server):
    srv = server(command_timeout="2s")
    with it.Smtp(platform.port, timeout=15) as c:
        c.ehlo()
        start = time.monotonic()
        r = c.reply()
        waited = time.monotonic() - start
        assert r.code == 421 and r.enhanced == "4.4.2", r
        assert 1.5 <= waited <= 6, waited
        data, closed = c.read_until_eof(5)
        assert closed


def test_idle_client_in_a_transaction_times_out_and_nothing_is_stored(platform, users, server):
    srv = server(command_timeout="2s", data_timeout="2s")
    with it.Smtp(platform.port, timeout=15) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        c.expect("RCPT TO:<%s>" % ALICE, 250)
        c.expect("DATA", 354)
        c.send(b"Subject: stalled\r\n\r\nhalf a mess")
        start = time.monotonic()
        r = c.reply()
        assert r.code == 421 and r.enhanced == "4.4.2", r
        assert time.monotonic() - start <= 6
        data, closed = c.read_until_eof(5)
        assert closed
    assert platform.mbox_files() == []


def test_slow_but_active_client_is_not_cut_off(platform, users, server):
    srv = server(command_timeout="2s", data_timeout="2s")
    with it.Smtp(platform.port, timeout=15) as c:
        c.ehlo()
        for _ in range(3):
            time.sleep(1.2)
            assert c.cmd("NOOP").code == 250
        c.expect("MAIL FROM:<s@example.org>", 250)
        c.expect("RCPT TO:<%s>" % ALICE, 250)
        c.expect("DATA", 354)
        c.send(b"Subject: slow\r\n\r\n")
        for i in range(4):
            time.sleep(1.2)
            c.send(b"line %d\r\n" % i)
        c.send(b".\r\n")
        assert c.reply().code == 250
        c.quit()
    assert platform.messages("alice")[0].body == b"line 0\nline 1\nline 2\nline 3\n"


def test_sigterm_lets_a_data_transfer_in_progress_finish(platform, users, server):
    """SIGTERM while a client is half-way through DATA: the server stops
    accepting at once, waits (within its grace time, 10 s by default) for the
    message, answers 250 for it, closes the session and exits 0."""
    srv = server()
    body = b"".join(b"line %05d of a message interrupted by SIGTERM\n" % i for i in range(2000))
    msg = it.make_message("sigterm", body, sender="s@example.org")
    payload = it.dot_stuff(it.to_crlf(msg)) + b".\r\n"
    with it.Smtp(platform.port, timeout=20) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        c.expect("RCPT TO:<%s>" % ALICE, 250)
        c.expect("DATA", 354)
        half = len(payload) // 2
        c.send(payload[:half])
        time.sleep(0.2)
        srv.signal(signal.SIGTERM)
        time.sleep(1.0)
        assert srv.running(), "server exited with a transfer in progress"
        # No new sessions once stopping: refused, 421, or closed.
        try:
            n = it.Smtp(platform.port, timeout=3, greet=False)
            try:
                r = n.reply()
                assert r.code == 421, r
            except EOFError:
                pass
            except socket.timeout:
                raise AssertionError("a new connection during shutdown hangs without an answer")
            finally:
                n.close()
        except (ConnectionRefusedError, ConnectionResetError):
            pass
        c.send(payload[half:])
        r = c.reply()
        assert r.code == 250, r
        try:
            r = c.cmd("QUIT")
            assert r.code in (221, 421), r
        except (EOFError, ConnectionResetError, BrokenPipeError):
            pass
    rc = srv.wait(timeout=15)
    assert rc == 0
    msgs = platform.messages("alice")
    assert len(msgs) == 1
    it.split_delivered(msgs[0], msg)


def test_sigterm_closes_idle_sessions_and_exits_0_quickly(platform, users, server):
    srv = server()
    c = it.Smtp(platform.port, timeout=20)
    c.ehlo()
    start = time.monotonic()
    srv.signal(signal.SIGTERM)
    codes, data, closed = c.all_replies_until_eof(limit=15)
    assert closed, "idle session not closed at shutdown"
    assert codes in ([], [421]), data
    rc = srv.wait(timeout=15)
    assert rc == 0
    assert time.monotonic() - start < 12
    c.close()


def test_deleted_user_is_refused_at_once(platform, users, server):
    srv = server()
    assert it.send_mail(platform.port, "s@example.org", [ALICE], it.make_message("before")).code == 250
    platform.delete_user("alice")
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        r = c.cmd("RCPT TO:<%s>" % ALICE)
        assert r.code == 550 and r.enhanced == "5.1.1", r
        c.expect("RCPT TO:<%s>" % BOB, 250)
        c.quit()


def test_created_user_is_accepted_at_once(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        r = c.cmd("RCPT TO:<dave@dave.semail.test>")
        assert r.code == 550 and r.enhanced == "5.1.1", r
        c.quit()
    dave = platform.create_user("dave")
    msg = it.make_message("welcome", sender="s@example.org")
    assert it.send_mail(platform.port, "s@example.org", [dave], msg).code == 250
    it.split_delivered(platform.messages("dave")[0], msg)
    # A box recreated under the same address works too.
    platform.delete_user("dave")
    platform.create_user("dave")
    assert it.send_mail(platform.port, "s@example.org", [dave], msg).code == 250
