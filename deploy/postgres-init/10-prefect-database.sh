#!/bin/sh
# Run by the postgres image once, when its data volume is first initialised: the Prefect
# server's own role and database. The password comes from the environment (PG_PREFECT_PASSWORD,
# see .env.example) through psql's \getenv, so it is on no command line and in no log.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv prefect_password PG_PREFECT_PASSWORD
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
REVOKE ALL ON DATABASE prefect FROM PUBLIC;
SQL
