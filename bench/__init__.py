"""`make bench`: Crossdock's benchmarks, every comparison measured side by side in one run.

Scenarios (``python -m bench --help``): the building-block floor, end-to-end
order-to-ship throughput, a burst of inventory movements, a direct synchronous
integration baseline under a slowed WMS, lookups next to a raw gRPC echo, and
peak RSS per service. Results go to ``results.json`` and ``summary.md``.
"""
