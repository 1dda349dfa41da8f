"""The operations console: server-rendered pages under /console for the people who
run the flow (customer service, supply chain, operations), on the gateway's own
process and through the same process and admin APIs as its HTTP routes.

- ``web.py``: the sub-application, sessions (cookie), CSRF, permissions, idempotent
  actions, audit, error pages (never a stack trace).
- ``words.py``: what codes mean in clear words, what a cancellation compensates,
  which resolution fits which exception (pure, unit-tested).
- ``orders.py``, ``exceptions.py``, ``deadletters.py``, ``inventory.py``, ``health.py``,
  ``audit.py``: the views.
- ``sampler.py``: the periodic samples of every service's /metrics behind flow health.
"""
