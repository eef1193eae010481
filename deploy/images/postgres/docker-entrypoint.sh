#!/bin/sh
# The official postgres image's entrypoint, reduced to what docker-compose.yml uses: on an
# empty PGDATA, initdb with POSTGRES_USER/POSTGRES_PASSWORD, create POSTGRES_DB, run
# /docker-entrypoint-initdb.d/*.sh (executed if executable, else sourced) and *.sql against a
# server listening on the Unix socket only; then `postgres` on TCP, password logins (SCRAM).
set -eu
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set to initialise the database}"
    export POSTGRES_USER="${POSTGRES_USER:-postgres}"
    database="${POSTGRES_DB:-$POSTGRES_USER}"
    password_file=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --username="$POSTGRES_USER" --pwfile="$password_file" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -w -o "-c listen_addresses=''" start
    if [ "$database" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -c "CREATE DATABASE \"$database\""
    fi
    for file in /docker-entrypoint-initdb.d/*; do
        case "$file" in
            *.sh) echo "docker-entrypoint.sh: running $file"
                  if [ -x "$file" ]; then "$file"; else . "$file"; fi ;;
            *.sql) echo "docker-entrypoint.sh: running $file"
                   psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$database" -f "$file" ;;
        esac
    done
    pg_ctl -w -m fast stop
    echo "docker-entrypoint.sh: database initialised"
fi
if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
