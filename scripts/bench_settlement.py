"""Measure the settlement export over a large period (not part of the test suite).

    .venv/bin/python scripts/bench_settlement.py --rows 1000000

Fills a scratch ERP store (SQLite, migrated to the current schema) with
``--rows`` documents (95% invoices, 5% credit memos, two currencies), starts
nats-server and the ERP service on it, then runs the real command

    crossdock export settlement --from … --to … --out …

as a child process, for CSV and for JSON-lines. Reports rows/s, the peak RSS
of the exporting command (getrusage of the child) and of the ERP service
(VmHWM before and after), and checks the file's totals against ERP's.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.mesh.launcher import NatsServer, ServiceProcess
from services.mesh.store import migrate

MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "erp" / "migrations"
START = datetime(2026, 1, 1, tzinfo=UTC)


def fill(db: Path, rows: int) -> Counter:
    """Insert ``rows`` documents over 30 days; returns the expected totals."""
    expected: Counter = Counter()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    step = timedelta(days=30) / rows
    invoices, memos = [], []
    for i in range(rows):
        posted = (START + step * i).strftime("%Y-%m-%d %H:%M:%S.%f")
        cur = "EUR" if i % 7 == 0 else "USD"
        amount = 1_000 + (i * 37) % 90_000
        if i % 20 == 19:
            memos.append((f"CM-{i:08d}", f"RET-{i:08d}", f"RMA-{i:08d}", f"ORD-{i:08d}", f"C-{i % 500:04d}",
                          cur, amount, posted))
            expected[(cur, "credited")] += amount
            expected[(cur, "memos")] += 1
        else:
            invoices.append((f"INV-{i:08d}", f"ORD-{i:08d}", f"SHP-{i:08d}", f"C-{i % 500:04d}", cur, amount,
                             posted))
            expected[(cur, "invoiced")] += amount
            expected[(cur, "invoices")] += 1
        if len(invoices) + len(memos) >= 50_000 or i == rows - 1:
            conn.executemany("INSERT INTO invoices (invoice_id, order_id, shipment_id, customer_id, "
                             "currency_code, total_minor, posted_at) VALUES (?, ?, ?, ?, ?, ?, ?)", invoices)
            conn.executemany("INSERT INTO credit_memos (credit_memo_id, return_id, rma_number, order_id, "
                             "customer_id, currency_code, total_minor, posted_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", memos)
            conn.commit()
            invoices, memos = [], []
    conn.close()
    return expected


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a process so far, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crossdock-bench-") as tmp:
        data = Path(tmp)
        db = data / "erp.db"
        migrate(f"sqlite:///{db}", MIGRATIONS)
        t = time.monotonic()
        expected = fill(db, args.rows)
        print(f"filled a scratch ERP store with {args.rows:,} documents in {time.monotonic() - t:.1f}s "
              f"({db.stat().st_size / 1e6:.0f} MB)")
        nats = NatsServer(data)
        nats.start()
        erp = ServiceProcess("erp", data, {"CROSSDOCK_NATS_URL": nats.url, "CROSSDOCK_DATA_DIR": str(data),
                                           "CROSSDOCK_LOG_LEVEL": "WARNING"})
        try:
            erp.start()
            erp.wait_healthy()
            env = {**os.environ, "CROSSDOCK_ERP_ADDR": erp.addr, "COLUMNS": "250"}
            for fmt in ("csv", "jsonl"):
                out = data / f"settlement.{fmt}"
                erp_before = vm_hwm(erp.proc.pid)
                t = time.monotonic()
                done = subprocess.run(
                    [sys.executable, "-c", "from services.cli import main; main()", "export", "settlement",
                     "--from", "2026-01-01", "--to", "2026-03-01", "--out", str(out)],
                    env=env, capture_output=True, text=True)
                seconds = time.monotonic() - t
                if done.returncode:
                    raise SystemExit(done.stdout + done.stderr)
                cli_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB, largest child so far
                print(done.stdout.strip().splitlines()[-2])
                print(f"{fmt:5}: {args.rows:,} rows in {seconds:.1f}s = {args.rows / seconds:,.0f} rows/s "
                      f"(command start-up included); file {out.stat().st_size / 1e6:.0f} MB; peak RSS: "
                      f"command {cli_peak / 1024:.0f} MB, ERP service {erp_before / 1024:.0f} -> "
                      f"{vm_hwm(erp.proc.pid) / 1024:.0f} MB")
                if fmt == "csv":
                    got: Counter = Counter()
                    with out.open() as f:
                        for r in csv.DictReader(f):
                            amount = int(r["amount_minor"])
                            if r["document_type"] == "INVOICE":
                                got[(r["currency"], "invoiced")] += amount
                                got[(r["currency"], "invoices")] += 1
                            else:
                                got[(r["currency"], "credited")] -= amount
                                got[(r["currency"], "memos")] += 1
                    print("file totals equal the documents inserted:", got == expected)
        finally:
            erp.stop()
            nats.stop()


if __name__ == "__main__":
    main()
