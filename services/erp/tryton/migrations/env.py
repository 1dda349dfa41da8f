from services.erp.tryton.store import metadata
from services.mesh.store import run_alembic_env

run_alembic_env(metadata)
