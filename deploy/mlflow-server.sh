#!/bin/sh
# MLflow tracking server of the production profile: runs and models in Postgres; artifacts go through the
# server (--artifacts-destination), so run workers need neither a shared filesystem nor bucket credentials.
#
#   MLFLOW_PG_HOST, MLFLOW_PG_PORT (5432), MLFLOW_PG_USER, MLFLOW_PG_DB (mlflow), MLFLOW_PG_PASSWORD
#     or MLFLOW_BACKEND_STORE_URI (a full postgresql+psycopg2://... URI) instead of the MLFLOW_PG_* parts
#   MLFLOW_ARTIFACTS_DESTINATION   local dir or s3://, gs://, ... (default $FTLAB_HOME/mlartifacts)
#   MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000), MLFLOW_WORKERS (2)
#   MLFLOW_ALLOWED_HOSTS           Host headers to accept beyond localhost and private IPs, e.g. mlflow.example.com
#   MLFLOW                         the mlflow executable (default: mlflow on PATH)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  MLflow's server-side job runner (GenAI judges, trace rollups): false by
#                                  default, ftlab uses none of it and it runs 8 more processes; true turns it on
# Extra arguments are passed on to `mlflow server`.
set -eu

if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
  : "${MLFLOW_PG_HOST:?set MLFLOW_PG_HOST (or MLFLOW_BACKEND_STORE_URI)}"
  : "${MLFLOW_PG_USER:?set MLFLOW_PG_USER}"
  # psycopg2 named explicitly: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed.
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://${MLFLOW_PG_USER}@${MLFLOW_PG_HOST}:${MLFLOW_PG_PORT:-5432}/${MLFLOW_PG_DB:-mlflow}"
  # libpq reads the password from the environment: it stays out of the URI (no escaping) and out of `ps`.
  if [ -n "${MLFLOW_PG_PASSWORD:-}" ]; then
    PGPASSWORD="$MLFLOW_PG_PASSWORD"
    export PGPASSWORD
  fi
fi

MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION

if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
  set -- --allowed-hosts "$MLFLOW_ALLOWED_HOSTS" "$@"
fi

exec "${MLFLOW:-mlflow}" server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-${FTLAB_HOME:?set FTLAB_HOME or MLFLOW_ARTIFACTS_DESTINATION}/mlartifacts}" \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}" \
  "$@"
