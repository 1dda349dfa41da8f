from services.mesh.store import run_alembic_env
from services.returns.store import metadata

run_alembic_env(metadata)
