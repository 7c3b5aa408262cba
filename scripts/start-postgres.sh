#!/usr/bin/env bash
# Install (Debian's package) and start a local PostgreSQL for the test suite, and make a
# role that may create databases. Prints the admin URL the tests take as
# DEPLOYSERVER_TEST_DATABASE_URL. Safe to run again.
set -euo pipefail

PGUSER_NAME=${PGUSER_NAME:-deployserver}
PGPASS=${PGPASS:-deployserver-test}
PGPORT=${PGPORT:-5432}

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main --port "$PGPORT" >&2
fi
if ! pg_lsclusters -h | grep -q "^$version *main .*online"; then
  pg_ctlcluster "$version" main start >&2
fi
for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q -p $PGPORT" && break
  sleep 1
done
su postgres -c "psql -q -p $PGPORT -v ON_ERROR_STOP=1" >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PGUSER_NAME') THEN
    CREATE ROLE $PGUSER_NAME LOGIN CREATEDB PASSWORD '$PGPASS';
  END IF;
END \$\$;
-- DROP DATABASE ... WITH (FORCE) ends every session on the test database, including
-- ones of other roles (autovacuum's): that needs pg_signal_backend
GRANT pg_signal_backend TO $PGUSER_NAME;
SQL
echo "postgresql+psycopg://$PGUSER_NAME:$PGPASS@127.0.0.1:$PGPORT/postgres"
