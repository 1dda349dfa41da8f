"""The event catalog (docs/catalog): committed as generated, accepted by the AsyncAPI
parser, and saying what the contract and the runtime say."""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser

import pytest
import yaml

from services.mesh import bus, catalog, contracts
from services.mesh.config import Settings
from services.mesh.store import build_headers
from tests.external_tools import asyncapi_validator


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return catalog.render()


@pytest.fixture(scope="module")
def doc(generated) -> dict:
    return yaml.safe_load(generated["asyncapi.yaml"])


def test_the_committed_catalog_is_what_the_code_generates(generated):
    for name, text in generated.items():
        path = catalog.OUT / name
        assert path.exists(), f"{path} is missing: run `make catalog` and commit it"
        assert path.read_text() == text, (
            f"{path} differs from what services/mesh/catalog.py generates from contracts.py and "
            "proto/: run `make catalog` and commit the result")


def test_the_asyncapi_parser_accepts_the_committed_document():
    proc = subprocess.run([*asyncapi_validator(), str(catalog.OUT / "asyncapi.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout, f"the validator printed nothing:\n{proc.stderr}"
    report = json.loads(proc.stdout)
    problems = [d for d in report["diagnostics"] if d["severity"] in ("error", "warning")]
    assert report["valid"] and not problems, json.dumps(report["diagnostics"], indent=2)
    assert report["version"].startswith("3.")
    # One channel per subject plus the dead-letter channel, as the parser counts them.
    assert report["channels"] == len(contracts.SUBJECTS) + 1


def test_every_subject_is_a_channel_with_its_stream_publishers_and_consumers(doc):
    by_address = {c["address"]: c for c in doc["channels"].values()}
    assert set(by_address) == set(contracts.SUBJECTS) | {"dlq.{consumer}"}
    for subject, body in contracts.SUBJECTS.items():
        facts = by_address[subject]["x-crossdock"]
        assert facts["stream"] == contracts.stream_for(subject)
        assert set(facts["publishers"]) == contracts.publishers(subject) != set()
        assert [c["durable"] for c in facts["consumers"]] == contracts.consumers(subject)
        assert all(c["service"] == contracts.SUBSCRIPTIONS[c["durable"]].service for c in facts["consumers"])
        (message,) = by_address[subject]["messages"].values()
        name = message["$ref"].rsplit("/", 1)[1]
        assert name == body.DESCRIPTOR.full_name
        assert doc["components"]["messages"][name]["contentType"] == "application/protobuf"


def test_an_event_is_owned_by_its_publisher_and_a_command_by_its_target(doc):
    by_address = {c["address"]: c for c in doc["channels"].values()}
    assert by_address["wms.inventory.adjusted"]["x-crossdock"]["owner"] == "wms"
    assert by_address["cmd.erp.invoice.post"]["x-crossdock"]["owner"] == "erp"
    assert by_address["cmd.erp.invoice.post"]["x-crossdock"]["publishers"] == ["ordertoship"]
    assert by_address["cmd.wms.stock.receive"]["x-crossdock"]["publishers"] == ["erp"]


def test_every_publisher_sends_and_every_durable_consumer_receives(doc):
    sends = {(op["channel"]["$ref"].rsplit("/", 1)[1], op["tags"][0]["name"].removeprefix("service:"))
             for op in doc["operations"].values() if op["action"] == "send"}
    receives = {(op["channel"]["$ref"].rsplit("/", 1)[1], op["x-crossdock-consumer"]["durable"])
                for op in doc["operations"].values() if op["action"] == "receive"}
    for subject in contracts.SUBJECTS:
        assert {(subject, svc) for svc in contracts.publishers(subject)} <= sends
        assert {(subject, d) for d in contracts.consumers(subject)} <= receives
    for op in doc["operations"].values():
        if op["action"] == "receive":
            consumer = op["x-crossdock-consumer"]
            assert consumer["dead_letter_subject"] == f"dlq.{consumer['durable']}"
            assert consumer["max_deliveries"] == Settings.model_fields["max_deliver"].default


def test_payload_schemas_have_every_field_and_the_proto_comments(doc):
    schemas = doc["components"]["schemas"]
    for body in contracts.SUBJECTS.values():
        schema = schemas[body.DESCRIPTOR.full_name]
        assert set(schema["properties"]) == {f.name for f in body.DESCRIPTOR.fields}
        assert schema["description"].startswith(next(s for s, b in contracts.SUBJECTS.items() if b is body))
    revision = schemas["crossdock.erp.v1.CustomerUpserted"]["properties"]["revision"]
    assert revision["x-protobuf-type"] == "int64"
    assert "replica ignores an event older" in revision["description"]
    # A nested message by reference, its description beside it.
    customer = schemas["crossdock.erp.v1.CustomerUpserted"]["properties"]["customer"]
    assert customer == {"$ref": "#/components/schemas/crossdock.erp.v1.Customer"} or \
        customer["allOf"] == [{"$ref": "#/components/schemas/crossdock.erp.v1.Customer"}]
    # Every reference resolves.
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc)
    for ref in refs:
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]


def test_the_headers_are_those_the_outbox_writes(doc):
    documented = set(doc["components"]["schemas"]["CloudEventsHeaders"]["properties"])
    written = set(build_headers(contracts.SUBJECTS["wms.inventory.adjusted"](), source="wms",
                                event_id="e-1", key="SKU@WH"))
    assert written <= documented
    assert documented - written == set(catalog.TRACE_HEADERS)


def test_the_delivery_guarantees_are_the_runtimes(doc):
    g = doc["info"]["x-crossdock-delivery"]
    assert g["publishing"]["dedupe_window_seconds"] == bus.DUPLICATE_WINDOW_S
    assert g["stream"]["retention_seconds"] == bus.STREAM_MAX_AGE_S
    assert g["consuming"]["ack_wait_seconds"] == Settings.model_fields["ack_wait"].default
    dlq = doc["channels"]["dlq"]
    assert dlq["parameters"]["consumer"]["enum"] == list(contracts.SUBSCRIPTIONS)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.sections: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.append(a["id"])
            if tag == "section":
                self.sections.append(a["id"])
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])


def test_the_html_page_has_a_section_per_domain_and_needs_nothing_from_outside(generated):
    page = _Page()
    page.feed(generated["index.html"])
    assert page.sections[:len(catalog.DOMAINS)] == [f"domain-{d}" for d in catalog.DOMAINS]
    assert set(contracts.SUBJECTS) <= set(page.ids)
    assert len(page.ids) == len(set(page.ids)), "duplicate anchors"
    assert "script" not in page.tags
    for link in page.links:
        assert link.startswith("#") and link[1:] in page.ids or link == "asyncapi.yaml", link
