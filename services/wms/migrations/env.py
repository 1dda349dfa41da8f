from services.mesh.store import run_alembic_env
from services.wms.store import metadata

run_alembic_env(metadata)
