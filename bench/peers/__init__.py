"""The peers of the side-by-side benchmark: the same order-to-ship workflow as a
Temporal workflow with activities and as a DBOS workflow with steps, driving
Crossdock's own ERP, WMS and TMS system services. They run in their own venv
(``.venv-peers``, from requirements-peers.lock) and their own processes; see
README.md beside this file. ``bench/peerrun.py`` starts and measures them."""
