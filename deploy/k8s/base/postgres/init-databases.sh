#!/usr/bin/env bash
# Creates one role and one database per Crossdock service: for every file
# role-<service> in $CROSSDOCK_DB_CREDENTIALS (the Secret postgres-credentials),
# role crossdock_<service> with that password, owning database
# crossdock_<service>, which no other role may connect to.
#
# Run by the postgres image on first start (/docker-entrypoint-initdb.d).
# Idempotent: run it again after adding a service (or rotating a password):
#   kubectl -n crossdock exec postgres-0 -- bash /docker-entrypoint-initdb.d/10-crossdock-databases.sh
set -euo pipefail

credentials="${CROSSDOCK_DB_CREDENTIALS:-/etc/postgres/credentials}"
prefix="${CROSSDOCK_DB_PREFIX:-crossdock_}"
psql_args=(-v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" --dbname postgres)

shopt -s nullglob
found=0
for file in "$credentials"/role-*; do
  service="${file##*/role-}"
  if [[ ! "$service" =~ ^[a-z][a-z0-9_]*$ ]]; then
    echo "init-databases: skipping $file: service names are lower-case letters, digits and _" >&2
    continue
  fi
  name="${prefix}${service}"
  password="$(<"$file")"
  found=$((found + 1))
  # Values go in as psql variables (:'quoted' / :"identifier"), never pasted
  # into the SQL text.
  psql "${psql_args[@]}" -v name="$name" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'name')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
ALTER ROLE :"name" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT ALL ON DATABASE :"name" TO :"name";
SQL
  echo "init-databases: database $name ready (owner $name)"
done
if [[ $found -eq 0 ]]; then
  echo "init-databases: no role-<service> files in $credentials" >&2
  exit 1
fi
