"""Gateway rules without I/O: gRPC request validation, tokens, problem mapping."""

from __future__ import annotations

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.returns.v1 import returns_pb2 as rpb
from gateway import validation
from gateway.governance import ApiClient, fingerprint, parse_token, trace_id_from
from gateway.problems import from_grpc
from services.mesh.errors import DownstreamUnavailable


def fields(violations) -> set[str]:
    return {f for f, _ in violations}


def test_a_good_submission_has_no_violation():
    r = ots.SubmitOrderRequest(request_id="r1", customer_id="C-1",
                               lines=[ots.OrderLine(sku="SKU-1", quantity=2)])
    assert validation.submit_order(r) == []


def test_a_malformed_submission_names_every_field():
    r = ots.SubmitOrderRequest(request_id="", customer_id="bad id!", shortage_policy=7,
                               lines=[ots.OrderLine(sku="", quantity=0, line_number=3)])
    r.lines[0].unit_price.amount_minor = 5
    r.ship_to.country_code = "usa"
    assert fields(validation.submit_order(r)) == {
        "request_id", "customer_id", "shortage_policy", "lines[0].sku", "lines[0].quantity",
        "lines[0].unit_price", "lines[0].line_number", "ship_to.country_code"}


def test_returns_and_listings():
    bad = rpb.CreateReturnRequest(request_id="r", order_id="", lines=[rpb.ReturnLine(quantity=1)])
    assert fields(validation.create_return(bad)) == {"order_id", "lines[0].sku", "lines[0].reason"}
    assert fields(validation.list_orders(ots.ListOrdersRequest(page_size=1000), 100)) == {"page_size"}
    assert validation.list_returns(rpb.ListReturnsRequest(page_size=10), 100) == []


def test_tokens_tenants_and_fingerprints():
    assert parse_token("cdk_cl_1.secret") == ("cl_1", "secret")
    for bad in ("", "cdk_", "cdk_cl_1", "cdk_.x", "Bearer x", "cdk_cl_1." + "x" * 300):
        assert parse_token(bad) is None
    bound = ApiClient("c", "n", "web", "C-1", frozenset(), 0)
    desk = ApiClient("d", "n", "desk", "", frozenset(), 0)
    assert bound.owns("C-1") and not bound.owns("C-2") and desk.owns("C-2")
    assert fingerprint("/v1/orders", {"a": 1, "b": 2}) == fingerprint("/v1/orders", {"b": 2, "a": 1})
    assert fingerprint("/v1/orders", {"a": 1}) != fingerprint("/v1/orders", {"a": 2})
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert trace_id_from(tp) == "0af7651916cd43dd8448eb211c80319c" and len(trace_id_from(None)) == 32


def test_an_open_breaker_is_a_503_with_retry_after_and_anything_else_never_a_500():
    p = from_grpc(DownstreamUnavailable("wms"))
    assert p.status == 503 and p.headers["Retry-After"]
    assert from_grpc(RuntimeError("boom")).status == 502


def _downstream(err):
    import grpc
    from grpc_status import rpc_status

    status = rpc_status.to_status(err.to_status())
    return grpc.aio.AioRpcError(status.code, grpc.aio.Metadata(),
                                grpc.aio.Metadata(*status.trailing_metadata), status.details)


def test_a_missing_reference_keeps_the_downstream_words_a_looked_up_record_gets_the_gateways():
    from services.mesh.errors import NotFound

    err = _downstream(NotFound("item", "SKU-9", "unknown SKU(s): SKU-9"))
    assert from_grpc(err).detail == "unknown SKU(s): SKU-9"
    # The record a route looked up: worded by the gateway, the same as for another tenant's.
    assert from_grpc(err, "order", "ORD-1").detail == "order 'ORD-1' not found"


def test_a_bad_page_token_is_a_400_naming_it():
    from services.mesh.errors import InvalidArgument

    p = from_grpc(_downstream(InvalidArgument([("page_token", "not a page token")])))
    assert p.status == 400 and p.errors == [{"field": "query.page_token", "description": "not a page token"}]
    assert from_grpc(_downstream(InvalidArgument([("lines[0].sku", "required")]))).status == 422


def test_control_characters_are_found_at_any_depth_and_text_is_left_alone():
    r = ots.SubmitOrderRequest(request_id="r\x00",
                               lines=[ots.OrderLine(sku="ok"), ots.OrderLine(sku="\x1b[2J")])
    r.ship_to.name = "Ann\tLee"
    r.ship_to.line1 = "Dock 4\r\nGate B"
    r.ship_to.city = "\u0085"  # C1 NEXT LINE
    assert fields(validation.text_violations(r)) == {"request_id", "lines[1].sku", "ship_to.city"}
    assert validation.text_violations(ots.CancelOrderRequest(order_id="O-1", reason="late\n")) == []


def test_control_characters_in_map_fields_are_found_too():
    from crossdock.admin.v1 import admin_pb2

    dl = admin_pb2.DeadLetter(headers={"ce-id": "ok", "x\x00": "v", "y": "\x7f"})
    assert fields(validation.text_violations(dl)) == {"headers['x\\x00']", "headers['y']"}


def test_an_api_client_request_names_every_bad_field():
    from crossdock.admin.v1 import api_clients_pb2 as cpb
    from gateway.governance import SCOPES

    good = cpb.CreateApiClientRequest(channel="webshop", customer_id="C-1", scopes=["orders:read"])
    assert validation.create_api_client(good, SCOPES) == []
    bad = cpb.CreateApiClientRequest(channel="web shop", name="n" * 201, scopes=["orders:read", "sudo"],
                                     rate_limit=float("nan"))
    assert fields(validation.create_api_client(bad, SCOPES)) == {"channel", "name", "scopes[1]", "rate_limit"}
