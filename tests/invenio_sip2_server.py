"""invenio-sip2's SIP2 server (inveniosoftware-contrib, from PyPI) as a second library
system not written here, for tests/test_sip2.py. Run with the Python of a separate
environment that has invenio-sip2 (see ``invenio_venv`` in the test): it is not a
dependency of biblioedge. Its SIP2 side (framing, checksums, sequence numbers, 96/97, the
fixed and variable fields) is invenio-sip2's own; this file only supplies the ILS callbacks
a deployment writes (login, status, a reader), keeps its datastore in fakeredis instead of
a Redis server, and leaves out 63 when asked, as an ILS integration without it is set up.

    python invenio_sip2_server.py PORT [--without-63]
"""

from __future__ import annotations

import os
import sys

import fakeredis
from flask import Flask
from invenio_sip2 import InvenioSIP2
from invenio_sip2.config import SIP2_MESSAGE_ACTIONS
from invenio_sip2.datastore import Sip2RedisDatastore
from invenio_sip2.server import SocketServer

READERS = {"P000102": ("Trần Thị Bình", "1234", "")}


class MemoryDatastore(Sip2RedisDatastore):
    def __init__(self, app=None, **kwargs):  # type: ignore[no-untyped-def]
        self.prefix = app.config["SIP2_DATASTORE_REDIS_PREFIX"]
        self.datastore = fakeredis.FakeStrictRedis()


def login(user, password, **kwargs):  # type: ignore[no-untyped-def]
    if (user, password) != ("kiosk", "kiosk"):
        return {}
    return {
        "authenticated": True,
        "terminal": user,
        "institution_id": "TVTN",
        "library_name": "Thu vien (invenio-sip2)",
        "library_language": "en",
        "user_id": user,
    }


def status(login, **kwargs):  # type: ignore[no-untyped-def]
    return {}


class Flags(str):
    """The 14 patron status flags, as rero-ils hands them over (str() renders them)."""


def patron_status(patron_id, **kwargs):  # type: ignore[no-untyped-def]
    reader = READERS.get(patron_id)
    if reader is None:
        return {
            "patron_status": Flags(" " * 14),
            "language": "en",
            "patron_id": patron_id,
            "valid_patron": False,
            "patron_name": "",
        }
    return {
        "patron_status": Flags(" " * 14),
        "language": "en",
        "institution_id": "TVTN",
        "patron_id": patron_id,
        "patron_name": reader[0],
        "valid_patron": True,
    }


class Account(dict):  # type: ignore[type-arg]
    """A reader's account as an invenio-sip2 ILS handler hands it over: a dict whose counts
    are attributes too (what its patron information action reads)."""

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def account(patron_id, **kwargs):  # type: ignore[no-untyped-def]
    """Patron information (63): two loans, listed when the summary asks for them."""
    reader = READERS.get(patron_id)
    charged = ["30000001", "30000003"] if reader else []
    return Account(
        patron_status=Flags(" " * 14),
        language="en",
        patron_id=patron_id,
        patron_name=reader[0] if reader else "",
        valid_patron=reader is not None,
        hold_items_count=0,
        overdue_items_count=0,
        charged_items_count=len(charged),
        fine_items_count=0,
        recall_items_count=0,
        unavailable_items_count=0,
        charged_items=charged,
    )


def main() -> None:
    port = int(sys.argv[1])
    app = Flask("biblioedge-invenio-sip2")
    actions = dict(SIP2_MESSAGE_ACTIONS)
    patron_handlers = {"patron_status": patron_status, "account": account}
    if "--without-63" in sys.argv:  # its ACS status then says 63 is not supported
        actions.pop("63")
        patron_handlers.pop("account")
    app.config.update(
        SIP2_DATASTORE_HANDLER=MemoryDatastore,
        SIP2_MESSAGE_ACTIONS=actions,
        SIP2_LOGGING_CONSOLE_LEVEL="WARNING",
        SIP2_REMOTE_ACTION_HANDLERS={
            "biblioedge": {
                "login_handler": login,
                "system_status_handler": status,
                "patron_handlers": patron_handlers,
            }
        },
    )
    InvenioSIP2(app)
    with app.app_context():
        pid = os.getpid()  # what its own CLI passes, for its records of running servers
        server = SocketServer(
            name="biblioedge", host="127.0.0.1", port=port, remote="biblioedge", process_id=pid
        )
        server.run()


if __name__ == "__main__":
    main()
