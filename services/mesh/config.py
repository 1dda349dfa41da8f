"""Configuration from the environment, with defaults that work on one machine.

Every variable is prefixed ``CROSSDOCK_``. A bad value stops the service at
start with a message naming the variable (pydantic-settings does the checks).
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

# System services start first: the process services look them up at start.
SYSTEM_SERVICES = ("erp", "wms", "tms")
PROCESS_SERVICES = ("ordertoship", "returns", "gateway")
SERVICES = SYSTEM_SERVICES + PROCESS_SERVICES
DEFAULT_PORTS = {"erp": 50051, "wms": 50052, "tms": 50053, "ordertoship": 50054, "returns": 50055,
                 "gateway": 50056}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROSSDOCK_", extra="ignore")

    # Where every service keeps its SQLite store (and nats-server its data)
    # unless a database URL is given.
    data_dir: Path = Path(".data")
    nats_url: str = "nats://127.0.0.1:4322"
    # Address this service listens on; port 0 picks a free one and writes it
    # to <data_dir>/<service>.port.
    grpc_host: str = "127.0.0.1"
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    # Addresses of the other services (host:port).
    erp_addr: str = f"127.0.0.1:{DEFAULT_PORTS['erp']}"
    wms_addr: str = f"127.0.0.1:{DEFAULT_PORTS['wms']}"
    tms_addr: str = f"127.0.0.1:{DEFAULT_PORTS['tms']}"
    ordertoship_addr: str = f"127.0.0.1:{DEFAULT_PORTS['ordertoship']}"
    returns_addr: str = f"127.0.0.1:{DEFAULT_PORTS['returns']}"
    gateway_addr: str = f"127.0.0.1:{DEFAULT_PORTS['gateway']}"
    # Mutual TLS between the internal services (services/mesh/tls.py): the folder of the
    # mesh CA (ca.pem) and of each identity's <name>.pem/<name>.key. Empty = plaintext.
    # The gateway's own public gRPC port stays plaintext (API keys) either way.
    tls_dir: str = ""
    # SQLAlchemy URL of this service's own store; SQLite under data_dir when
    # empty. postgresql://... URLs are used with asyncpg.
    database_url: str = ""
    # Deadline of a synchronous gRPC call to another service, in seconds.
    rpc_timeout: float = Field(default=5.0, gt=0)
    # Stream replicas (3 on a clustered broker).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # Log level and format ("json" or "console").
    log_level: str = "INFO"
    log_format: str = "json"
    # Seconds between outbox sweeps (the relay is also woken on each commit).
    outbox_poll_interval: float = Field(default=0.5, gt=0)
    # Delivery attempts of a message before it goes to the dead-letter
    # stream; redeliveries back off exponentially from retry_backoff seconds
    # up to retry_backoff_max.
    max_deliver: int = Field(default=10, ge=1)
    retry_backoff: float = Field(default=0.5, gt=0)
    retry_backoff_max: float = Field(default=30.0, gt=0)
    ack_wait: float = Field(default=30.0, gt=0)
    # Circuit breaker per downstream service: open after this many failed
    # calls in a row (UNAVAILABLE / DEADLINE_EXCEEDED), try again after ttl.
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_ttl: float = Field(default=10.0, gt=0)
    # Postings into ERP per second (a cloud ERP's API limit); 0 = unlimited.
    erp_posting_rate: float = Field(default=0, ge=0)
    # Replica number when several instances of a service run (port file name).
    instance: str = ""
    # Prometheus /metrics (services/mesh/metrics.py): 0 picks a free port and
    # writes it to <data_dir>/<service><instance>-metrics.port; -1 turns it
    # off. Host: the gRPC host when empty. JetStream consumer info is polled
    # every metrics_poll_interval seconds.
    metrics_port: int = Field(default=0, ge=-1, le=65535)
    metrics_host: str = ""
    metrics_poll_interval: float = Field(default=5.0, gt=0)

    # ---- WMS autopilot (moves fulfilment on by itself) ----
    wms_autopilot: bool = True
    wms_pick_delay: float = Field(default=0.2, ge=0)
    wms_pack_delay: float = Field(default=0.2, ge=0)
    wms_ship_delay: float = Field(default=0.2, ge=0)
    # Share of autopilot picks that find one unit less than allocated (a short
    # pick), and of packs that find one unit damaged: warehouse exceptions for
    # demos and tests.
    wms_short_pick_rate: float = Field(default=0.0, ge=0, le=1)
    wms_damage_rate: float = Field(default=0.0, ge=0, le=1)

    # ---- order-to-ship ----
    default_shortage_policy: str = Field(default="BACKORDER", pattern="^(BACKORDER|CANCEL)$")
    # What a warehouse exception does to an order whose customer and channel
    # have no policy of their own (crossdock exceptions policy ...):
    # SHIP_PARTIAL (ship what is there, backorder the rest), HOLD (a person
    # decides) or CANCEL_LINES (ship what is there, cancel the rest).
    default_exception_policy: str = Field(default="SHIP_PARTIAL",
                                          pattern="^(SHIP_PARTIAL|HOLD|CANCEL_LINES)$")
    # Seconds order intake waits for WMS to choose a warehouse; a slower WMS
    # is not waited for: the order is placed from the availability WMS last
    # reported (see services/ordertoship/placement.py).
    ordertoship_wms_lookup_budget: float = Field(default=0.05, gt=0)

    # ---- WMS returns autopilot (receives and inspects expected returns by itself) ----
    wms_return_autopilot: bool = True
    wms_return_receive_delay: float = Field(default=0.5, ge=0)
    wms_return_inspect_delay: float = Field(default=0.5, ge=0)
    # Disposition of a returned line by its reason code: REASON=RESTOCK|SCRAP|REFUSE,
    # comma-separated; "*" matches any other reason.
    wms_return_rules: str = Field(
        default="NOT_NEEDED=RESTOCK,WRONG_ITEM=RESTOCK,DEFECTIVE=SCRAP,DAMAGED=SCRAP,*=REFUSE",
        pattern=r"^\s*[A-Z_*]+\s*=\s*(RESTOCK|SCRAP|REFUSE)\s*(,\s*[A-Z_*]+\s*=\s*(RESTOCK|SCRAP|REFUSE)\s*)*$")

    # ---- returns ----
    # Seconds an authorised return may take to reach the warehouse (14 days).
    returns_receive_window: float = Field(default=14 * 24 * 3600.0, gt=0)
    # Seconds between checks of the receive-window timers.
    returns_timer_interval: float = Field(default=1.0, gt=0)

    # ---- inventory reconciliation (run by the returns process) ----
    # Seconds between scheduled runs; 0 = on demand only.
    reconcile_interval: float = Field(default=3600.0, ge=0)
    # Scheduled runs also repair the ERP ledger.
    reconcile_repair: bool = False
    # Seconds after which a WMS movement ERP has not applied counts as lost.
    reconcile_grace: float = Field(default=60.0, ge=0)

    # Seals page tokens (services/mesh/paging.py): HMAC key shared by a service's
    # replicas; empty = a random key kept in <data_dir>/page-token.key.
    page_token_key: str = Field(default="", repr=False)

    # ---- gateway (experience API) ----
    # HTTP/JSON port; 0 picks a free one and writes it to <data_dir>/gateway-http.port.
    gateway_http_host: str = "127.0.0.1"
    gateway_http_port: int = Field(default=8080, ge=0, le=65535)
    # Requests per second per API client (a client may carry its own).
    gateway_rate_limit: float = Field(default=50.0, gt=0)
    # Largest request body, in bytes (413 beyond).
    gateway_max_body: int = Field(default=64 * 1024, ge=1)
    # Largest page a client may ask for.
    gateway_max_page_size: int = Field(default=100, ge=1, le=500)
    # Seconds an idempotency record is kept.
    gateway_idempotency_ttl: float = Field(default=24 * 3600.0, gt=0)
    # The operator token (services/mesh/operator_token.py): accepted by the gateway as an
    # internal client with every scope; empty = none (API clients only).
    gateway_operator_token: str = Field(default="", repr=False)
    # ---- the operations console (gateway/console, under /console) ----
    # Seconds without a request after which a session ends, and its lifetime whatever the activity.
    console_idle_timeout: float = Field(default=1800.0, gt=0)
    console_session_lifetime: float = Field(default=12 * 3600.0, gt=0)
    # Failed sign-ins tolerated per username (and per address) within the window (seconds).
    console_sign_in_attempts: int = Field(default=5, ge=1)
    console_sign_in_window: float = Field(default=900.0, gt=0)
    # Seconds between the console's samples of every service's /metrics (flow health).
    console_metrics_interval: float = Field(default=10.0, gt=0)
    # Dead letters replayed per second by "replay all matching".
    console_replay_rate: float = Field(default=5.0, gt=0)
    # The Jaeger UI (e.g. http://localhost:16686): an order's trace id links to it.
    jaeger_ui_url: str = ""

    # ---- replenishment (ERP's simulated supplier and transfers) ----
    # Seconds from a purchase being planned to the supplier's delivery at the
    # WMS dock, and from a transfer leaving its source warehouse to its arrival.
    erp_supplier_lead_time: float = Field(default=5.0, ge=0)
    erp_transfer_lead_time: float = Field(default=3.0, ge=0)
    # Seconds between the delivery loop's looks for due replenishments.
    erp_replenishment_interval: float = Field(default=0.5, gt=0)

    # ---- the ERP backend (services/erp/backend.py) ----
    # builtin: the reference ERP with its own store (the embedded default); tryton: the
    # adapter to a Tryton server (services/erp/tryton/), whose own store then keeps only
    # outbox/inbox, the id map and its cursors (SQLite erp-tryton.db unless database_url).
    erp_backend: str = Field(default="builtin", pattern="^(builtin|tryton)$")
    # Where the adapter reaches trytond (JSON-RPC), its database and the integration users.
    erp_tryton_url: str = "http://127.0.0.1:8000/"
    erp_tryton_database: str = "crossdock"
    erp_tryton_user: str = "crossdock"
    erp_tryton_credit_user: str = "crossdock-credit"
    erp_tryton_password: str = "crossdock-erp"
    # At most this many JSON-RPC calls in flight to Tryton (a burst queues; Tryton is
    # not overloaded).
    erp_tryton_max_concurrency: int = Field(default=4, ge=1, le=64)
    # The launcher's trytond: its database (empty: a SQLite file under data_dir/tryton;
    # else a PostgreSQL server URL, the database being erp_tryton_database), its
    # gunicorn workers (0: two per core, at most 4), its port (0: a free one), and a
    # prepared SQLite file to copy instead of activating modules (tests).
    erp_tryton_database_url: str = ""
    erp_tryton_workers: int = Field(default=0, ge=0, le=64)
    erp_tryton_port: int = Field(default=0, ge=0, le=65535)
    erp_tryton_template: str = ""
    # The change feed (Tryton's crossdock_change rows): polled every interval seconds; a
    # missing id (a transaction not committed yet: PostgreSQL sequences commit out
    # of order) is waited for this many seconds before it is taken as rolled back.
    erp_tryton_feed_interval: float = Field(default=0.5, gt=0)
    erp_tryton_feed_window: float = Field(default=5.0, ge=0)

    # ---- shared runtime: batching (services/mesh/bus.py) ----
    # At most this many fetched messages are handled in ONE store transaction
    # (each still claimed in the inbox); 1 = one transaction per message.
    consumer_tx_batch: int = Field(default=64, ge=1, le=1000)
    # A batch's transaction commits once it has been open this long (ms) and
    # the rest of the batch goes into the next one: the store's single write
    # connection (SQLite) is never held long while a gRPC call waits for it.
    consumer_tx_max_ms: float = Field(default=50.0, gt=0)

    def addr(self, service: str) -> str:
        """host:port, or several comma-separated (replicas: calls are spread round robin)."""
        return getattr(self, f"{service}_addr")

    @property
    def nats_servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def port_for(self, service: str) -> int:
        return self.grpc_port if self.grpc_port is not None else DEFAULT_PORTS[service]

    def store_url(self, service: str) -> str:
        if service == "erp" and self.erp_backend == "tryton" and not self.database_url:
            return f"sqlite:///{self.data_dir / 'erp-tryton'}.db"  # the adapter's store
        url = self.database_url or f"sqlite:///{self.data_dir / service}.db"
        return url

    @cached_property
    def resolved_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir


def load_settings(**overrides: object) -> Settings:
    """Read the environment; exit with a clear message on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"crossdock: bad configuration ({exc.error_count()} problem(s)):"]
        for err in exc.errors():
            name = "CROSSDOCK_" + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']} (got {err.get('input')!r})")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
