#!/usr/bin/env bash
# The shared MLflow tracking server for sweeps on a cluster: basic-auth app, SQL backend, artifacts proxied
# to S3 (clients need no S3 credentials), Host-header allowlist. Every secret comes from the environment
# (a Kubernetes Secret, SSM, a vault agent), never from this file or its command line.
#
#   pip install . psycopg2-binary                       # the project brings mlflow[auth] (Flask-WTF, for the auth app)
#   export MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:${PGPASSWORD}@db:5432/mlflow   # from a Secret
#   export MLFLOW_ARTIFACTS_DESTINATION=s3://<BUCKET>/mlflow
#   export MLFLOW_AUTH_ADMIN_PASSWORD=...                # read on the first start only (creates user admin)
#   export MLFLOW_FLASK_SERVER_SECRET_KEY=...            # CSRF key; the same on every replica
#   cluster/mlflow-server.sh                             # serves on 127.0.0.1:5000
#
# Optional: MLFLOW_HOST (default 127.0.0.1; 0.0.0.0 only inside a private network or a pod),
# MLFLOW_PORT (5000), MLFLOW_ALLOWED_HOSTS (Host headers accepted, default localhost and the in-cluster
# service name), MLFLOW_AUTH_DATABASE_URI (the user store; default SQLite under MLFLOW_STATE_DIR),
# MLFLOW_STATE_DIR (default ~/.cmmd-mlflow), MLFLOW_WORKERS (2). S3 access: the instance profile or
# service account, else AWS_* variables in the environment.
#
# Clients (the sweep driver on the Ray head): MLFLOW_TRACKING_URI=http://<host>:5000 plus
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials). Users and permissions:
# the admin creates them (mlflow.server.get_app_client("basic-auth", ...).create_user) and changes its own
# password after the first start. Never publish port 5000: see cluster/SECURITY.md.
set -euo pipefail

missing=()
for name in MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION MLFLOW_FLASK_SERVER_SECRET_KEY; do
  [[ -n "${!name:-}" ]] || missing+=("$name")
done
if ((${#missing[@]})); then
  echo "mlflow-server.sh: set ${missing[*]} in the environment (from your secret store)" >&2
  exit 2
fi

STATE=${MLFLOW_STATE_DIR:-$HOME/.cmmd-mlflow}
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
ALLOWED=${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:$PORT,127.0.0.1,127.0.0.1:$PORT,mlflow,mlflow:$PORT,mlflow.cmmd.svc.cluster.local:$PORT}
AUTH_DB=${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$STATE/basic_auth.db}
mkdir -p "$STATE"
chmod 700 "$STATE"

# The auth app's settings file holds no password: the admin's comes from MLFLOW_AUTH_ADMIN_PASSWORD.
# default_permission NO_PERMISSIONS: a new user sees nothing until granted (READ would open every run).
cat >"$STATE/basic_auth.ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = $AUTH_DB
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
export MLFLOW_AUTH_CONFIG_PATH="$STATE/basic_auth.ini"

# --backend-store-uri is read from MLFLOW_BACKEND_STORE_URI by mlflow itself: its password stays out of `ps`
exec mlflow server --app-name basic-auth \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
  --host "$HOST" --port "$PORT" --workers "${MLFLOW_WORKERS:-2}" \
  --allowed-hosts "$ALLOWED"
