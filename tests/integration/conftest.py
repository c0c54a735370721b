"""Fixtures of the SEMail integration suite.

- `platform`: a fresh temporary platform per test (config, state_dir,
  mail_root, free loopback ports on 127.0.0.1 and ::1).
- `server`: a factory: `server(**inbound_settings)` writes those [inbound]
  settings, creates nothing else, starts semail-inbound, waits until it
  answers 220, and registers it for teardown, which SIGTERMs it and asserts
  exit status 0 and a stderr free of ASan/UBSan reports.
- `alice`: the platform with users alice (alice@alice.semail.test) and bob
  (bob@bob.semail.test) registered.

The programs come from $SEMAIL_BUILD/bin (default /work/main/build).
"""

import os

import pytest

import semail_it as it


def pytest_configure(config):
    config.addinivalue_line("markers", "root: needs root (mounts a tmpfs)")


def pytest_collection_modifyitems(config, items):
    missing = [p for p in (it.INBOUND, it.ADMIN) if not os.access(p, os.X_OK)]
    if not missing:
        return
    # Without the programs nothing here can run; say so once per test rather
    # than failing with FileNotFoundError in every fixture.
    skip = pytest.mark.skip(reason="not built: %s (set SEMAIL_BUILD)" % ", ".join(missing))
    for item in items:
        item.add_marker(skip)


@pytest.fixture
def platform(tmp_path):
    return it.Platform(tmp_path)


@pytest.fixture
def server(platform):
    started = []

    def start(**inbound):
        if inbound:
            platform.write_config(**inbound)
        srv = it.Server(platform)
        started.append(srv)
        return srv.start()

    yield start
    errors = []
    for srv in started:
        try:
            srv.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def users(platform):
    """alice@alice.semail.test and bob@bob.semail.test."""
    return {"alice": platform.create_user("alice"), "bob": platform.create_user("bob")}
