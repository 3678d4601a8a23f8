#!/bin/bash
# First start of the PostgreSQL container (empty data volume): one database per service store.
# The services' `migrate` step then creates their tables; wa_neonize is the WhatsApp device store
# of the neonize engine (whatsmeow creates its own tables there).
set -euo pipefail
for db in wa_auth wa_session_worker wa_neonize wa_webhooks wa_stats; do
  echo "creating database ${db}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE \"${db}\" OWNER \"${POSTGRES_USER}\""
done
