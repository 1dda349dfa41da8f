"""The event catalog: an AsyncAPI 3 document and a static HTML page, generated.

Everything comes from the one source of truth and the runtime that enforces
it, never typed twice:

- ``contracts.py``: every subject, its stream and Protobuf body, who publishes
  it (``publishers``) and which durable consumers receive it (``consumers``,
  ``SUBSCRIPTIONS``);
- the Protobuf descriptors, compiled from ``proto/`` with their source info so
  that the comments of messages, fields and enum values become descriptions;
- the delivery guarantees of the runtime: the outbox relay and its dedupe id,
  the streams' dedupe window and retention (``bus.py``), acks, redelivery,
  back-off and the dead-letter subject (``bus.py`` and the defaults of
  ``config.Settings``), the CloudEvents headers (``store.build_headers``).

``make catalog`` (``python -m services.mesh.catalog``) writes
``docs/catalog/asyncapi.yaml`` and ``docs/catalog/index.html`` (one section per
owning domain, readable without tools); tests/catalog fails when the committed
files differ from what this module generates, and validates the document with
the AsyncAPI parser.

A payload schema is the ProtoJSON mapping of the Protobuf message with its proto
field names (what ``crossdock dlq show`` prints); on the wire the body is the
binary Protobuf message (``content-type: application/protobuf``).
"""

from __future__ import annotations

import argparse
import html
import importlib.resources
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from . import bus, contracts, deadletters
from .config import Settings
from .store import build_headers

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
OUT = ROOT / "docs" / "catalog"
ASYNCAPI_VERSION = "3.1.0"

DOMAINS: dict[str, tuple[str, str]] = {
    # domain -> (title, what it owns); the order of the catalog's sections.
    "erp": ("ERP", "The ERP system service: customers and items (master data), sales orders and "
            "their credit check, invoices, return authorisations and credit memos, the inventory "
            "ledger and its corrections, reorder points and replenishment planning."),
    "wms": ("WMS", "The warehouse system service: stock and its movements, fulfilment orders "
            "(allocate, pick, pack, ship) and their exceptions, expected and received returns and "
            "their inspection, replenishment requests, receipts and transfers."),
    "tms": ("TMS", "The transportation system service: shipments booked with a carrier and "
            "dispatched."),
    "ordertoship": ("Order-to-ship", "The order-to-ship process service: the order's lifecycle "
                    "across ERP, WMS and TMS; it sends the commands that move an order on."),
    "returns": ("Returns", "The return-to-credit process service: the return's lifecycle across "
                "ERP and WMS; it sends the commands that move a return on."),
}

# Headers of every message beyond those build_headers writes (the W3C trace context,
# injected by OpenTelemetry when a span is active).
TRACE_HEADERS = {
    "traceparent": "W3C trace context of the span that wrote the message (one trace per order).",
    "tracestate": "W3C trace state, when the tracer has any.",
}
CE_HEADERS = {
    "ce-specversion": "CloudEvents spec version: always 1.0.",
    "ce-id": "The event id (a UUID): the same as Nats-Msg-Id; every consumer's inbox records it, "
             "so a redelivery or a replay has at most one effect.",
    "ce-type": "The Protobuf full name of the body.",
    "ce-source": "crossdock/<service> that wrote the message.",
    "ce-time": "When the message was written to the outbox (RFC 3339, UTC); consumers measure "
               "their lag from it.",
    "ce-subject": "The aggregate the message is about (an order id, a SKU@warehouse...).",
    "content-type": "application/protobuf: the body is the binary Protobuf message.",
    "Nats-Msg-Id": "JetStream's dedupe id: the event id (a re-publish after a crash is dropped by "
                   "the stream inside its dedupe window).",
}
DLQ_HEADERS = {
    "crossdock-dlq-subject": "The subject the message was published on (where a replay sends it).",
    "crossdock-dlq-stream": "The stream it was consumed from.",
    "crossdock-dlq-stream-seq": "Its sequence in that stream.",
    "crossdock-dlq-consumer": "The durable consumer that gave up on it.",
    "crossdock-dlq-reason": "Why: the error of the last attempt (at most 2,000 characters).",
    "crossdock-dlq-permanent": "true for an error no retry can fix (undecodable or mistyped body, "
                               "an impossible command), false when the attempts ran out.",
    "crossdock-dlq-attempts": "Delivery attempts made.",
    "crossdock-dlq-time": "When it was dead-lettered (RFC 3339, UTC).",
}

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: ({"type": "number"}, "double"),
    FieldDescriptor.TYPE_FLOAT: ({"type": "number"}, "float"),
    FieldDescriptor.TYPE_INT64: ({"type": "string", "format": "int64"}, "int64"),
    FieldDescriptor.TYPE_UINT64: ({"type": "string", "format": "uint64"}, "uint64"),
    FieldDescriptor.TYPE_SINT64: ({"type": "string", "format": "int64"}, "sint64"),
    FieldDescriptor.TYPE_FIXED64: ({"type": "string", "format": "uint64"}, "fixed64"),
    FieldDescriptor.TYPE_SFIXED64: ({"type": "string", "format": "int64"}, "sfixed64"),
    FieldDescriptor.TYPE_INT32: ({"type": "integer", "format": "int32"}, "int32"),
    FieldDescriptor.TYPE_SINT32: ({"type": "integer", "format": "int32"}, "sint32"),
    FieldDescriptor.TYPE_SFIXED32: ({"type": "integer", "format": "int32"}, "sfixed32"),
    FieldDescriptor.TYPE_UINT32: ({"type": "integer", "format": "uint32", "minimum": 0}, "uint32"),
    FieldDescriptor.TYPE_FIXED32: ({"type": "integer", "format": "uint32", "minimum": 0}, "fixed32"),
    FieldDescriptor.TYPE_BOOL: ({"type": "boolean"}, "bool"),
    FieldDescriptor.TYPE_STRING: ({"type": "string"}, "string"),
    FieldDescriptor.TYPE_BYTES: ({"type": "string", "contentEncoding": "base64"}, "bytes"),
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
}


# ------------------------------------------------------------------ source comments


def descriptor_set(proto_root: Path = PROTO) -> descriptor_pb2.FileDescriptorSet:
    """Every .proto under proto/, compiled with its source info (the comments)."""
    includes = importlib.resources.files("grpc_tools") / "_proto"
    files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "crossdock.binpb"
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", f"-I{includes}",
             "--include_source_info", "--include_imports", f"--descriptor_set_out={out}", *files],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"protoc failed:\n{proc.stderr}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _clean(comment: str) -> str:
    """A proto comment as prose: lines joined, paragraphs kept."""
    paragraphs, current = [], []
    for line in comment.strip().splitlines():
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def comments(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Full name (``pkg.Message``, ``pkg.Message.field``, ``pkg.Enum.VALUE``) -> its comment."""
    out: dict[str, str] = {}
    for file in fds.file:
        _file_comments(file, out)
    return out


def _file_comments(file: descriptor_pb2.FileDescriptorProto, out: dict[str, str]) -> None:
    # Source locations are addressed by path: 4 = message_type, 5 = enum_type; inside a
    # message 2 = field, 3 = nested_type, 4 = enum_type; inside an enum 2 = value.
    by_path = {tuple(loc.path): loc for loc in file.source_code_info.location}

    def note(name: str, path: tuple[int, ...]) -> None:
        loc = by_path.get(path)
        if loc is not None and (text := _clean(loc.leading_comments or loc.trailing_comments)):
            out[name] = text

    def enum(e, prefix: str, path: tuple[int, ...]) -> None:
        note(f"{prefix}.{e.name}", path)
        for vi, v in enumerate(e.value):
            note(f"{prefix}.{e.name}.{v.name}", (*path, 2, vi))

    def message(m, prefix: str, path: tuple[int, ...]) -> None:
        name = f"{prefix}.{m.name}"
        note(name, path)
        for fi, f in enumerate(m.field):
            note(f"{name}.{f.name}", (*path, 2, fi))
        for ni, n in enumerate(m.nested_type):
            message(n, name, (*path, 3, ni))
        for ei, e in enumerate(m.enum_type):
            enum(e, name, (*path, 4, ei))

    for mi, m in enumerate(file.message_type):
        message(m, file.package, (4, mi))
    for ei, e in enumerate(file.enum_type):
        enum(e, file.package, (5, ei))


# ------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Subject:
    subject: str
    kind: str  # "event" or "command"
    domain: str  # the owner: an event's publisher, a command's target
    stream: str
    body: Descriptor
    publishers: tuple[str, ...]
    consumers: tuple[tuple[str, str], ...]  # (durable, service)

    @property
    def channel_id(self) -> str:
        return self.subject


def owner(subject: str) -> str:
    """The domain that owns a subject's contract: an event's publisher, a command's target."""
    tokens = subject.split(".")
    return tokens[1] if tokens[0] == "cmd" else tokens[0]


def subjects() -> list[Subject]:
    out = []
    for subject, body in contracts.SUBJECTS.items():
        out.append(Subject(
            subject=subject, kind="command" if subject.startswith("cmd.") else "event",
            domain=owner(subject), stream=contracts.stream_for(subject), body=body.DESCRIPTOR,
            publishers=tuple(sorted(contracts.publishers(subject))),
            consumers=tuple((d, contracts.SUBSCRIPTIONS[d].service) for d in contracts.consumers(subject))))
    order = list(DOMAINS)
    return sorted(out, key=lambda s: (order.index(s.domain), s.kind != "event", s.subject))


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


def guarantees() -> dict[str, Any]:
    """The runtime's delivery guarantees, from the code and the settings' defaults."""
    return {
        "publishing": {
            "outbox": "written in the same store transaction as the state change that causes it; "
                      "relayed to JetStream oldest first and deleted once the broker acked",
            "dedupe_id": "Nats-Msg-Id = ce-id (the event id)",
            "dedupe_window_seconds": bus.DUPLICATE_WINDOW_S,
        },
        "stream": {
            "storage": "file",
            "retention_seconds": bus.STREAM_MAX_AGE_S,
            "replicas": f"{_default('stream_replicas')} on one node, 3 on a cluster "
                        "(CROSSDOCK_STREAM_REPLICAS)",
        },
        "consuming": {
            "consumer": "durable pull consumer, explicit acks, deliver all",
            "idempotency": "each handled ce-id recorded in the consumer's inbox in the same "
                           "transaction as its effect: one effect at most",
            "ack_wait_seconds": _default("ack_wait"),
            "max_deliveries": _default("max_deliver"),
            "retry_backoff_seconds": {
                "first": _default("retry_backoff"), "max": _default("retry_backoff_max"),
                "shape": "exponential, doubling, jittered (0.5-1x)"},
            "dead_letter_subject": f"{bus.DLQ_PREFIX}<consumer>",
            "last_attempt_timed_out": f"JetStream's MAX_DELIVERIES advisory is kept in stream "
                                      f"{bus.ADVISORY_STREAM}; the durable <consumer>-given-up reads it "
                                      "and dead-letters the message",
            "dead_letter_stream": deadletters.STREAM,
            "settings": "CROSSDOCK_ACK_WAIT, CROSSDOCK_MAX_DELIVER, CROSSDOCK_RETRY_BACKOFF, "
                        "CROSSDOCK_RETRY_BACKOFF_MAX",
        },
    }


def message_headers() -> dict[str, str]:
    """Every header a message carries, with what it means (checked against build_headers)."""
    written = set(build_headers(contracts.SUBJECTS["erp.item.upserted"](), source="catalog",
                                event_id="catalog", key="catalog"))
    unknown = written - set(CE_HEADERS) - set(TRACE_HEADERS)
    if unknown:
        raise RuntimeError(f"store.build_headers writes undocumented headers: {sorted(unknown)}")
    return {**CE_HEADERS, **TRACE_HEADERS}


# ------------------------------------------------------------------ schemas


class Schemas:
    """JSON Schemas (ProtoJSON, proto field names) of the Protobuf types the bodies use."""

    def __init__(self, notes: dict[str, str]) -> None:
        self.notes = notes
        self.schemas: dict[str, dict] = {}
        self.types: dict[str, Descriptor | EnumDescriptor] = {}

    def ref(self, desc: Descriptor | EnumDescriptor) -> dict:
        if desc.full_name in _WELL_KNOWN:
            return {**_WELL_KNOWN[desc.full_name], "x-protobuf-type": desc.full_name}
        if desc.full_name.startswith("google."):
            raise ValueError(f"no JSON mapping here for {desc.full_name}: add it to _WELL_KNOWN")
        if desc.full_name not in self.schemas:
            self.schemas[desc.full_name] = {}  # placeholder: recursion stops here
            self.types[desc.full_name] = desc
            if isinstance(desc, EnumDescriptor):
                self.schemas[desc.full_name] = self._enum(desc)
            else:
                self.schemas[desc.full_name] = self._message(desc)
        return {"$ref": f"#/components/schemas/{desc.full_name}"}

    def _enum(self, desc: EnumDescriptor) -> dict:
        lines = [self.notes.get(desc.full_name, "")]
        lines += [f"- {v.name}: {note}" for v in desc.values
                  if (note := self.notes.get(f"{desc.full_name}.{v.name}"))]
        return {"type": "string", "title": desc.name,
                "description": "\n".join(filter(None, lines)) or desc.name,
                "enum": [v.name for v in desc.values], "x-protobuf-enum": desc.full_name}

    def _message(self, desc: Descriptor) -> dict:
        props = {f.name: self.field(f) for f in desc.fields}
        schema = {"type": "object", "title": desc.name,
                  "description": self.notes.get(desc.full_name, desc.name),
                  "properties": props, "x-protobuf-message": desc.full_name}
        oneofs = {o.name: [f.name for f in o.fields] for o in desc.oneofs if not _synthetic(o)}
        if oneofs:
            schema["x-protobuf-oneofs"] = oneofs
        return schema

    def _single(self, f: FieldDescriptor) -> dict:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            return self.ref(f.message_type)
        if f.type == FieldDescriptor.TYPE_ENUM:
            return self.ref(f.enum_type)
        schema, proto_type = _SCALARS[f.type]
        if proto_type in ("string", "bool"):
            return dict(schema)
        return {**schema, "x-protobuf-type": proto_type}

    def field(self, f: FieldDescriptor) -> dict:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            schema = {"type": "object", "additionalProperties": self._single(value)}
        elif _repeated(f):
            schema = {"type": "array", "items": self._single(f)}
        else:
            schema = self._single(f)
        note = self.notes.get(f"{f.containing_type.full_name}.{f.name}")
        if note:
            # A $ref takes no siblings: the description goes beside an allOf.
            schema = ({"description": note, "allOf": [schema]} if "$ref" in schema
                      else {**schema, "description": note})
        return schema


def _repeated(f: FieldDescriptor) -> bool:
    return f.is_repeated


def _synthetic(oneof) -> bool:
    return len(oneof.fields) == 1 and oneof.fields[0].has_presence and oneof.name.startswith("_")


# ------------------------------------------------------------------ AsyncAPI


def _summary(text: str, subject: str = "") -> str:
    """The first sentence of a comment, without the subject it starts with; a parenthesis
    that followed the subject goes to the end."""
    first = text.split("\n\n", 1)[0]
    aside = ""
    if subject and first.startswith(subject):
        first = first[len(subject):].lstrip()
        if first.startswith("(") and "):" in first:
            aside, first = first[:first.index("):") + 1], first[first.index("):") + 2:]
        first = first.removeprefix(":").strip()
    first = re.split(r"(?<!e\.g)(?<!i\.e)\.\s", first, maxsplit=1)[0].rstrip(".")
    first = first[:1].upper() + first[1:]
    return f"{first} {aside}.".replace(" .", ".") if aside else f"{first}."


def _op_id(*parts: str) -> str:
    return "_".join(parts)


def asyncapi(notes: dict[str, str] | None = None) -> dict[str, Any]:
    """The AsyncAPI 3 document of the whole mesh: every subject a channel, every publisher
    a send operation, every durable consumer a receive operation."""
    if notes is None:
        notes = comments(descriptor_set())
    from importlib.metadata import version

    items = subjects()
    schemas = Schemas(notes)
    g = guarantees()
    headers = message_headers()
    header_props = {name: {"type": "string", "description": text} for name, text in headers.items()}
    header_props["ce-specversion"]["const"] = "1.0"
    header_props["ce-source"]["pattern"] = "^crossdock/[a-z]+$"
    header_props["ce-time"]["format"] = "date-time"
    header_props["content-type"]["const"] = "application/protobuf"
    required = ["ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time", "content-type", "Nats-Msg-Id"]
    components: dict[str, Any] = {
        "schemas": {
            "CloudEventsHeaders": {
                "type": "object", "title": "CloudEvents headers (NATS binding) and trace context",
                "description": "Written by the outbox (services/mesh/store.py build_headers) on every "
                               "event and command.",
                "properties": header_props, "required": required},
        },
        "messages": {}, "messageTraits": {},
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for s in items:
        name = s.body.full_name
        note = notes.get(name, s.body.name)
        payload = schemas.ref(s.body)
        components["messages"][name] = {
            "name": s.body.name, "title": f"{s.body.name} ({s.subject})",
            "summary": _summary(note, s.subject),
            "description": note, "contentType": "application/protobuf",
            "headers": {"allOf": [
                {"$ref": "#/components/schemas/CloudEventsHeaders"},
                {"type": "object", "properties": {"ce-type": {"type": "string", "const": name}}}]},
            "payload": payload,
            "tags": [{"name": f"domain:{s.domain}"}, {"name": s.kind}],
            "x-protobuf-message": name,
            "x-protobuf-file": s.body.file.name,
        }
        consumers = [{"durable": d, "service": svc,
                      "filter_subjects": list(contracts.SUBSCRIPTIONS[d].filters),
                      "dead_letter_subject": f"{bus.DLQ_PREFIX}{d}"} for d, svc in s.consumers]
        channels[s.channel_id] = {
            "address": s.subject,
            "title": s.subject,
            "summary": _summary(note, s.subject),
            "description": note,
            "messages": {s.body.name: {"$ref": f"#/components/messages/{name}"}},
            "tags": [{"name": f"domain:{s.domain}"}, {"name": s.kind}],
            "x-crossdock": {"owner": s.domain, "kind": s.kind, "stream": s.stream,
                            "publishers": list(s.publishers), "consumers": consumers},
        }
        ref = {"$ref": f"#/channels/{s.channel_id}"}
        msg_ref = [{"$ref": f"#/channels/{s.channel_id}/messages/{s.body.name}"}]
        for svc in s.publishers:
            operations[_op_id(svc, "sends", s.subject)] = {
                "action": "send", "channel": ref, "messages": msg_ref,
                "title": f"{svc} publishes {s.subject}",
                "summary": f"{svc} writes {s.body.name} to its outbox; the relay publishes it to "
                           f"stream {s.stream}.",
                "tags": [{"name": f"service:{svc}"}],
                "x-crossdock-delivery": g["publishing"],
            }
        for d, svc in s.consumers:
            operations[_op_id(d, "receives", s.subject)] = {
                "action": "receive", "channel": ref, "messages": msg_ref,
                "title": f"{svc} receives {s.subject} ({d})",
                "summary": f"Durable consumer {d} of {svc} on stream {s.stream}; what it gives up on "
                           f"goes to {bus.DLQ_PREFIX}{d}.",
                "tags": [{"name": f"service:{svc}"}],
                "x-crossdock-consumer": {**g["consuming"], "durable": d, "service": svc, "stream": s.stream,
                                         "filter_subjects": list(contracts.SUBSCRIPTIONS[d].filters),
                                         "dead_letter_subject": f"{bus.DLQ_PREFIX}{d}"},
            }
    components["schemas"].update(schemas.schemas)
    # The dead-letter stream: one subject per durable consumer.
    durables = list(contracts.SUBSCRIPTIONS)
    dlq_headers = {name: {"type": "string", "description": text} for name, text in DLQ_HEADERS.items()}
    components["messages"]["DeadLetter"] = {
        "name": "DeadLetter", "title": "A message a consumer gave up on",
        "summary": "The original message, headers and body unchanged, plus why it was given up on.",
        "description": "Parked by the consumer (a permanent error, or a retryable one on its last "
                       "attempt) or after JetStream's MAX_DELIVERIES advisory (the last attempt timed "
                       "out). `crossdock dlq list/show/replay/discard` (or crossdock.admin.v1."
                       "DeadLetterService): a replay publishes it again to crossdock-dlq-subject with "
                       "a new Nats-Msg-Id and the same ce-id, then deletes the dead letter.",
        "contentType": "application/protobuf",
        "headers": {"allOf": [{"$ref": "#/components/schemas/CloudEventsHeaders"},
                              {"type": "object", "properties": dlq_headers, "required": list(DLQ_HEADERS)}]},
        "payload": {"type": "string", "contentEncoding": "base64",
                    "description": "The original body, unchanged; its ce-type header names its "
                                   "Protobuf type."},
        "tags": [{"name": "domain:dlq"}],
    }
    channels["dlq"] = {
        "address": bus.DLQ_PREFIX + "{consumer}",
        "title": "dlq.<consumer>",
        "summary": "Messages a durable consumer gave up on, waiting for an operator to replay or "
                   "discard them.",
        "description": f"Stream {deadletters.STREAM}. Every durable consumer parks what it gives up on "
                       f"here after at most {g['consuming']['max_deliveries']} attempts; the "
                       "dead-letter alerts (deploy/prometheus) count what waits here.",
        "parameters": {"consumer": {"description": "The durable consumer that gave up.", "enum": durables}},
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        "tags": [{"name": "domain:dlq"}],
        "x-crossdock": {"owner": "dlq", "stream": deadletters.STREAM,
                        "publishers": sorted({sub.service for sub in contracts.SUBSCRIPTIONS.values()})},
    }
    for svc in sorted({sub.service for sub in contracts.SUBSCRIPTIONS.values()}):
        operations[_op_id(svc, "sends", "dlq")] = {
            "action": "send", "channel": {"$ref": "#/channels/dlq"},
            "messages": [{"$ref": "#/channels/dlq/messages/DeadLetter"}],
            "title": f"{svc} dead-letters what its consumers give up on",
            "summary": ", ".join(f"{bus.DLQ_PREFIX}{d}" for d, sub in contracts.SUBSCRIPTIONS.items()
                                 if sub.service == svc) + ".",
            "tags": [{"name": f"service:{svc}"}],
        }
    del components["messageTraits"]
    services = {*contracts.COMMAND_SENDERS.values(), *DOMAINS,
                *(sub.service for sub in contracts.SUBSCRIPTIONS.values())}
    tags = ([{"name": f"domain:{d}", "description": text} for d, (_, text) in DOMAINS.items()]
            + [{"name": "domain:dlq", "description": "The dead-letter stream."},
               {"name": "event", "description": "A fact, published by the service of its domain."},
               {"name": "command", "description": "A request to the system service it names (cmd.<target>), "
                                                  "sent by a process service."}]
            + [{"name": f"service:{svc}"} for svc in sorted(services)])
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:crossdock:events",
        "info": {
            "title": "Crossdock event catalog",
            "version": version("crossdock"),
            "description": _INFO,
            "tags": tags,
            "x-crossdock-generated-by": "services/mesh/catalog.py (make catalog) from "
                                        "services/mesh/contracts.py and proto/",
            "x-crossdock-streams": {name: patterns for name, patterns in contracts.STREAMS.items()},
            "x-crossdock-delivery": g,
        },
        "defaultContentType": "application/protobuf",
        "servers": {
            "local": {"host": "127.0.0.1:4322", "protocol": "nats",
                      "description": "`make run`: the embedded nats-server with JetStream (file storage, "
                                     "sync_interval always)."},
            "kubernetes": {"host": "nats:4222", "protocol": "nats",
                           "description": "deploy/k8s: a 3-node JetStream cluster; each service has its "
                                          "own user, allowed exactly the subjects below "
                                          "(base/nats/nats.conf)."},
        },
        "channels": channels,
        "operations": operations,
        "components": components,
    }


_INFO = """\
Every NATS JetStream subject of Crossdock: its stream, who publishes and who consumes it, its \
Protobuf body (the payload schemas are its ProtoJSON mapping, with the proto field names and the \
comments of proto/ as descriptions), the CloudEvents headers every message carries and the \
delivery guarantees of the runtime. Generated from services/mesh/contracts.py and the Protobuf \
descriptors by `make catalog`; never edited by hand.

Subjects name the owning domain, the aggregate and the fact (`wms.inventory.adjusted`); commands \
start with `cmd.<target>` and are owned by the system service they address. Events are published \
by the service of their domain, commands by the process services that drive the workflows.

Delivery: a message is written to the publisher's outbox in the same transaction as the change \
that causes it and relayed with Nats-Msg-Id = ce-id (the stream drops a repeat inside its dedupe \
window). Consumers are durable pull consumers with explicit acks; each records the ce-id it \
handled in its inbox in the same transaction as the effect (one effect at most). A retryable \
failure is redelivered with jittered exponential back-off; a permanent one, or the last attempt, \
goes to dlq.<consumer> with the reason."""


# ------------------------------------------------------------------ HTML


_CSS = """\
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232a;background:#fff}
main{max-width:70rem;margin:0 auto;padding:1rem 1.5rem 4rem}
h1{font-size:1.7rem}h2{border-bottom:2px solid #2a6f97;padding-bottom:.2rem;margin-top:3rem}
h3{margin:2rem 0 .3rem;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:1.05rem}
h4{margin:1rem 0 .3rem}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f6f9}td:first-child{white-space:nowrap}.k{color:#57606a;font-size:.9em}
nav ul{columns:2}.tag{display:inline-block;padding:0 .4rem;border-radius:.6rem;background:#e7f0f6;
font-size:.8rem;margin-left:.4rem}p.d{white-space:pre-line}"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _code(text: object) -> str:
    return f"<code>{_e(text)}</code>"


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """An HTML table; the cells are HTML already."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table of facts: a header cell and an HTML cell per row."""
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _single_type(f: FieldDescriptor, types: dict) -> str:
    target = f.message_type or f.enum_type
    if target is None:
        return _code(_SCALARS[f.type][1])
    if target.full_name in types:
        return f'<a href="#type-{_e(target.full_name)}">{_code(target.name)}</a>'
    return _code(target.full_name)


def _type_cell(f: FieldDescriptor, types: dict) -> str:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        k, v = (f.message_type.fields_by_name[n] for n in ("key", "value"))
        return f"map&lt;{_single_type(k, types)}, {_single_type(v, types)}&gt;"
    t = _single_type(f, types)
    return f"repeated {t}" if _repeated(f) else t


def _fields_table(desc: Descriptor | EnumDescriptor, notes: dict[str, str], types: dict) -> str:
    name = desc.full_name
    if isinstance(desc, EnumDescriptor):
        return _table(["value", "number", "meaning"], (
            [_code(v.name), str(v.number), _e(notes.get(f"{name}.{v.name}", ""))] for v in desc.values))
    if not desc.fields:
        return "<p class=k>(no fields)</p>"
    return _table(["field", "number", "type", "description"], (
        [_code(f.name), str(f.number), _type_cell(f, types), _e(notes.get(f"{name}.{f.name}", ""))]
        for f in desc.fields))


def _list(values: Iterable[str]) -> str:
    return ", ".join(values) or "<span class=k>none</span>"


def _fact(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {x}" for k, x in v.items())
    return str(v)


def _type_article(t: Descriptor | EnumDescriptor, notes: dict[str, str], types: dict) -> str:
    kind = "enum" if isinstance(t, EnumDescriptor) else "message"
    return (f'<article id="type-{_e(t.full_name)}"><h4>{_code(t.full_name)} <span class=tag>{kind}</span>'
            f"</h4><p class=d>{_e(notes.get(t.full_name, ''))}</p>{_fields_table(t, notes, types)}"
            "</article>")


def _subject_article(s: Subject, notes: dict[str, str], types: dict) -> str:
    consumers = "".join(
        f"<li>{_code(c)} ({_e(svc)}), filter {_e(', '.join(contracts.SUBSCRIPTIONS[c].filters))}; "
        f"dead letters to {_code(bus.DLQ_PREFIX + c)}</li>" for c, svc in s.consumers)
    facts = _facts([
        ("stream", f"{_code(s.stream)} ({_e(', '.join(contracts.STREAMS[s.stream]))})"),
        ("body", f"{_code(s.body.full_name)} in {_code(s.body.file.name)}, header "
                 f"{_code('ce-type: ' + s.body.full_name)}"),
        ("published by", f"{_list(s.publishers)} (through its outbox)"),
        ("consumed by", f"<ul>{consumers}</ul>" if consumers else _list([])),
    ])
    return (f'<article id="{_e(s.subject)}"><h3>{_e(s.subject)} <span class=tag>{s.kind}</span></h3>'
            f"<p class=d>{_e(notes.get(s.body.full_name, ''))}</p>{facts}"
            f"{_fields_table(s.body, notes, types)}</article>")


def _domain_section(d: str, items: list[Subject], notes: dict[str, str], types: dict) -> str:
    title, text = DOMAINS[d]
    mine = [s for s in items if s.domain == d]
    out = [f'<section id="domain-{d}"><h2>{_e(title)}</h2><p>{_e(text)}</p>', _table(
        ["subject", "kind", "body", "publishers", "consumers"],
        ([f'<a href="#{_e(s.subject)}">{_code(s.subject)}</a>', s.kind, _code(s.body.name),
          _list(s.publishers), _list(f"{c} ({svc})" for c, svc in s.consumers)] for s in mine))]
    out += [_subject_article(s, notes, types) for s in mine]
    packages = {s.body.file.package for s in mine}
    bodies = {s.body.full_name for s in items}
    shared = sorted((t for name, t in types.items() if t.file.package in packages and name not in bodies),
                    key=lambda t: t.full_name)
    if shared:
        out.append(f'<h3 id="types-{d}">Types of {_e(title)}</h3>')
        out += [_type_article(t, notes, types) for t in shared]
    out.append("</section>")
    return "".join(out)


def render_html(doc: dict[str, Any], notes: dict[str, str]) -> str:
    """The catalog as one static page: a section per owning domain (its subjects, then the
    Protobuf types of its package), then the common types, the headers, the guarantees and
    the dead letters."""
    items = subjects()
    schemas = Schemas(notes)
    for s in items:
        schemas.ref(s.body)
    types = schemas.types
    info = doc["info"]
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(info['title'])}</title><style>{_CSS}</style></head><body><main>",
           f"<h1>{_e(info['title'])} <span class=tag>v{_e(info['version'])}</span></h1>",
           f"<p class=d>{_e(info['description'])}</p>",
           f'<p>Machine-readable: <a href="asyncapi.yaml">asyncapi.yaml</a> (AsyncAPI {_e(doc["asyncapi"])}).'
           " Generated by <code>make catalog</code>.</p>",
           "<nav><h2>Contents</h2><ul>"]
    for d, (title, _) in DOMAINS.items():
        n = sum(1 for s in items if s.domain == d)
        out.append(f'<li><a href="#domain-{d}">{_e(title)}</a> <span class=k>({n} subjects)</span></li>')
    out += ['<li><a href="#common">Common types</a></li>', '<li><a href="#headers">Headers</a></li>',
            '<li><a href="#delivery">Delivery guarantees</a></li>',
            '<li><a href="#dlq">Dead letters</a></li></ul></nav>']
    out += [_domain_section(d, items, notes, types) for d in DOMAINS]
    owned = {s.body.file.package for s in items}
    common = sorted((t for t in types.values() if t.file.package not in owned), key=lambda t: t.full_name)
    out.append('<section id="common"><h2>Common types</h2>')
    out += [_type_article(t, notes, types) for t in common]
    out.append("</section>")
    out.append('<section id="headers"><h2>Headers</h2><p>Every event and command carries the CloudEvents '
               "attributes (NATS binding) and the W3C trace context; the body is the binary Protobuf "
               "message.</p>"
               + _table(["header", "meaning"], ([_code(k), _e(v)] for k, v in message_headers().items()))
               + "</section>")
    out.append('<section id="delivery"><h2>Delivery guarantees</h2>')
    for part, facts in guarantees().items():
        rows = ((k.replace("_", " "), _e(_fact(v))) for k, v in facts.items())
        out.append(f"<h4>{_e(part)}</h4>" + _facts(rows))
    out.append("</section>")
    dead_letter = doc["components"]["messages"]["DeadLetter"]["description"]
    subjects_list = "".join(f"<li>{_code(bus.DLQ_PREFIX + d)} ({_e(sub.service)})</li>"
                            for d, sub in contracts.SUBSCRIPTIONS.items())
    out.append(f'<section id="dlq"><h2>Dead letters</h2><p class=d>{_e(dead_letter)}</p>'
               f"<p>Stream {_code(deadletters.STREAM)}, one subject per durable consumer:</p>"
               f"<ul>{subjects_list}</ul><p>Headers added to the original ones:</p>"
               + _table(["header", "meaning"], ([_code(k), _e(v)] for k, v in DLQ_HEADERS.items()))
               + "</section>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ files


def dump_yaml(doc: dict[str, Any]) -> str:
    header = ("# Generated by `make catalog` (services/mesh/catalog.py) from services/mesh/contracts.py\n"
              "# and proto/: do not edit. Human-readable: index.html beside this file.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def render() -> dict[str, str]:
    """File name -> content of docs/catalog."""
    notes = comments(descriptor_set())
    doc = asyncapi(notes)
    return {"asyncapi.yaml": dump_yaml(doc), "index.html": render_html(doc, notes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write (default docs/catalog)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the folder differs from the code")
    args = parser.parse_args(argv)
    files = render()
    stale = [n for n, text in files.items()
             if not (args.out / n).exists() or (args.out / n).read_text() != text]
    if args.check:
        for n in stale:
            print(f"{args.out / n} is out of date: run `make catalog`", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, text in files.items():
        (args.out / n).write_text(text)
    print(f"wrote {', '.join(str(args.out / n) for n in files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
