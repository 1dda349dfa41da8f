"""Every consumer's dispatch table handles exactly the subjects the contract routes to it.

Each service's own bootstrap is run against a recorder (no broker, no store),
and ``check_dispatch`` — what ServiceApp.add_consumer runs at start — is
applied to what it registers.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest

from services.mesh import contracts
from services.mesh.app import check_dispatch
from services.mesh.config import Settings

SERVICES = sorted({sub.service for sub in contracts.SUBSCRIPTIONS.values()})


class Recorder:
    """Stands in for ServiceApp in a service's bootstrap: records its consumers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.settings = Settings()
        self.store = self.clients = None
        self.consumers: dict[str, SimpleNamespace] = {}

    def add_consumer(self, durable: str, handlers, **options) -> None:
        assert durable not in self.consumers, f"{durable} registered twice"
        self.consumers[durable] = SimpleNamespace(handlers=handlers, **options)

    def __getattr__(self, name: str):  # add_servicer, add_loop, ...: nothing to do here
        return lambda *args, **kwargs: None


def bootstrapped(service: str) -> Recorder:
    app = Recorder(service)
    importlib.import_module(f"services.{service}.__main__").bootstrap(app)
    return app


@pytest.mark.parametrize("service", SERVICES)
def test_each_consumer_of_a_service_handles_exactly_the_subjects_routed_to_it(service):
    app = bootstrapped(service)
    expected = {d for d, sub in contracts.SUBSCRIPTIONS.items() if sub.service == service}
    assert set(app.consumers) == expected
    for durable, registered in app.consumers.items():
        check_dispatch(durable, registered.handlers)
        assert set(registered.handlers) == set(contracts.routed_subjects(durable))


def test_a_dispatch_table_missing_a_routed_subject_is_refused_at_start():
    table = {s: None for s in contracts.routed_subjects("tms-commands")}
    check_dispatch("tms-commands", table)
    with pytest.raises(ValueError, match="no handler for .*cmd.tms.shipment.book"):
        check_dispatch("tms-commands", {})
    with pytest.raises(ValueError, match="does not receive: .*wms.fulfilment.shipped"):
        check_dispatch("tms-commands", {**table, "wms.fulfilment.shipped": None})


def test_every_command_has_a_sender_and_a_consumer():
    for subject in contracts.SUBJECTS:
        if subject.startswith("cmd."):
            assert contracts.publishers(subject), f"{subject}: add its sender to COMMAND_SENDERS"
            assert contracts.consumers(subject), f"{subject}: no consumer receives it"


@pytest.mark.parametrize(("pattern", "subject", "expected"), [
    ("cmd.erp.>", "cmd.erp.salesorder.create", True),
    ("cmd.erp.>", "cmd.erp", False),
    ("cmd.erp.salesorder.*", "cmd.erp.salesorder.create", True),
    ("cmd.erp.salesorder.*", "cmd.erp.salesorder.create.x", False),
    ("erp.item.upserted", "erp.item.upserted", True),
    ("erp.item.upserted", "erp.item.upserted.x", False),
    ("erp.*.upserted", "erp.customer.upserted", True),
])
def test_subject_matching_follows_nats_wildcards(pattern, subject, expected):
    assert contracts.matches(pattern, subject) is expected
