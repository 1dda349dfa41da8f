"""The e2e fixture ``nc_mesh`` (a NATS connection to the module's mesh) is shared with tests/e2e."""

from tests.e2e.conftest import nc_mesh  # noqa: F401
