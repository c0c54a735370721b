"""The dialog-script suite (tests/dialogs/*.dialog, played by
tests/dialogs/run.py) against each server it names: semail-inbound (the
`server` fixture) and semail-outbound's submission port (the `outbound`
fixture). One test per dialog and server; a dialog's `# settings:` go into
[inbound] (both daemons read their limits there) and its `# log:` patterns
must show up in the server's log."""

import glob
import importlib.util
import os
import re
import time

import pytest

import semail_it as it
import outbound_it as ot

DIALOG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dialogs")
_spec = importlib.util.spec_from_file_location("semail_dialogs", os.path.join(DIALOG_DIR, "run.py"))
dialogs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dialogs)

CASES = []
for _path in sorted(glob.glob(os.path.join(DIALOG_DIR, "*.dialog"))):
    for _which in dialogs.Dialog(_path).servers:
        CASES.append(pytest.param(_path, _which, id="%s-%s" % (os.path.basename(_path)[:-7], _which)))


def test_there_are_dialogs_for_both_servers():
    assert {c.values[1] for c in CASES} == {"inbound", "outbound"}, CASES


def wait_for_log(srv, pattern, limit=5.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if re.search(pattern, srv.stderr()):
            return
        time.sleep(0.05)
    raise AssertionError("the server log has no %r:\n%s" % (pattern, srv.stderr()[-3000:]))


@pytest.mark.parametrize("path,which", CASES)
def test_dialog(path, which, request):
    d = dialogs.Dialog(path)
    if which == "inbound":
        platform = request.getfixturevalue("platform")
        users = request.getfixturevalue("users")
        srv = request.getfixturevalue("server")(**d.settings)
        port, rcpt = platform.port, users["alice"]
    else:
        if not os.access(ot.OUTBOUND, os.X_OK):
            pytest.skip("semail-outbound is not built")
        oplatform = request.getfixturevalue("oplatform")
        if d.settings:
            oplatform.write_config(**d.settings)
        srv = request.getfixturevalue("outbound")()
        port, rcpt = oplatform.sub_port, ot.ALICE
    # The fixture's readiness probe must have left before a dialog that
    # counts connections opens its own: its session is logged, then closed
    # and uncounted a moment later.
    wait_for_log(srv, r"session client=.* end=")
    time.sleep(0.2)
    dialogs.run(d, "127.0.0.1", port, {"RCPT": rcpt, "HOST": it.HOSTNAME})
    for pattern in d.logs:
        wait_for_log(srv, pattern)
