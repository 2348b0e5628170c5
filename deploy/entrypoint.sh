#!/bin/sh
# Container entry point: `webserver` (default), `daemon`, `mlflow` (deploy/mlflow-server.sh), `serve <lab>`
# (the lab's champion on port 5001 via ftlab serve; MLFLOW_TRACKING_URI points at the registry) or any command.
# FTLAB_PROFILE picks the Dagster instance installed into $DAGSTER_HOME on first start:
#   production  deploy/dagster.yaml (Postgres; needs the DAGSTER_PG_* variables)
#   local       the repo-root dagster.yaml (embedded SQLite under $DAGSTER_HOME; one container only)
set -eu
cd "$(dirname "$0")/.."

case "${FTLAB_PROFILE:-production}" in
  production) instance=deploy/dagster.yaml ;;
  local) instance=dagster.yaml ;;
  *) echo "FTLAB_PROFILE must be production or local, not '${FTLAB_PROFILE}'" >&2; exit 2 ;;
esac
mkdir -p "$DAGSTER_HOME"
# A dagster.yaml already there wins: a mounted ConfigMap, or the copy from an earlier start on this volume.
if [ ! -f "$DAGSTER_HOME/dagster.yaml" ]; then
  cp "$instance" "$DAGSTER_HOME/dagster.yaml"
fi

command="${1:-webserver}"
if [ $# -gt 0 ]; then shift; fi
case "$command" in
  webserver) exec dagster-webserver -w workspace.yaml -h 0.0.0.0 -p 3000 "$@" ;;
  daemon) exec dagster-daemon run -w workspace.yaml "$@" ;;
  mlflow) export MLFLOW_HOST="${MLFLOW_HOST:-0.0.0.0}"; exec deploy/mlflow-server.sh "$@" ;;
  serve) exec ftlab serve "$@" --host 0.0.0.0 --port "${FTLAB_SERVE_PORT:-5001}" ;;
  *) exec "$command" "$@" ;;
esac
