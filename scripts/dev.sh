#!/usr/bin/env bash
# Runs the local stack in the foreground until Ctrl-C: Postgres (existing or private), anvil on
# 127.0.0.1:$ANVIL_PORT with the platform deployed by the deploy script, the indexer mirroring it
# into Postgres, and the API on $API_LISTEN (127.0.0.1:8080); prints where it all is.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# forge compiles with the pinned solc-js, never downloading a compiler.
export FOUNDRY_SOLC="$root/tools/solc/solc" FOUNDRY_OFFLINE=true
anvil_port=${ANVIL_PORT:-8545}
rpc_url="http://127.0.0.1:$anvil_port"
# anvil's first dev account: a well-known key, for local chains only.
deployer_key=${DEPLOYER_PRIVATE_KEY:-0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80}
# anvil's eighth dev account pays the relayed transactions' gas.
relayer_key=${RELAYER_PRIVATE_KEY:-0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356}
# anvil's fifth dev account holds the ledger's billing role: the meter sends with a key of its
# own, so its nonces never race the operator's.
billing_key=${BILLING_PRIVATE_KEY:-0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a}
# anvil's sixth dev account holds the domain registry's verifier role, for the same reason.
verifier_key=${VERIFIER_PRIVATE_KEY:-0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba}
# anvil's fourth dev account holds the registrar role: it records names bought under the
# platform's namespace (no registrar account is needed for those).
registrar_key=${REGISTRAR_PRIVATE_KEY:-0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6}
api_listen=${API_LISTEN:-127.0.0.1:8080}
mkdir -p .data

# The chain starts fresh each time, so its mirror does too: a database of its own, recreated.
if [ -z "${DATABASE_URL:-}" ]; then
  server_url=$(PG_DATABASE=postgres scripts/postgres.sh)
  psql "$server_url" -qc "drop database if exists decentraspace_dev with (force)"
fi
database_url=$(PG_DATABASE=decentraspace_dev scripts/postgres.sh)
# Managed databases are made on the same server (DATABASE_HOSTS, unless set). They belong to the
# fresh chain's services, so the previous run's go first (`ds_<service id>` would be reused).
database_hosts=${DATABASE_HOSTS:-$(PG_DATABASE=postgres scripts/postgres.sh)}
if [ -z "${DATABASE_HOSTS:-}" ]; then
  for name in $(psql "$database_hosts" -Atc "select datname from pg_database where datname ~ '^ds_[0-9]+$'"); do
    psql "$database_hosts" -qc "drop database if exists \"$name\" with (force)"
  done
  for name in $(psql "$database_hosts" -Atc "select rolname from pg_roles where rolname ~ '^ds_[0-9]+$'"); do
    psql "$database_hosts" -qc "drop role if exists \"$name\""
  done
fi

if tools/foundry cast chain-id --rpc-url "$rpc_url" >/dev/null 2>&1; then
  echo "dev: something already answers on $rpc_url; stop it or set ANVIL_PORT" >&2
  exit 1
fi
tools/foundry anvil --host 127.0.0.1 --port "$anvil_port" >.data/anvil.log 2>&1 &
anvil_pid=$!
indexer_pid=
api_pid=
ipfs_pid=
arlocal_pid=
registry_pid=
trap 'kill $anvil_pid $indexer_pid $api_pid $ipfs_pid $arlocal_pid $registry_pid 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 50); do
  tools/foundry cast chain-id --rpc-url "$rpc_url" >/dev/null 2>&1 && break
  sleep 0.2
done
chain_id=$(tools/foundry cast chain-id --rpc-url "$rpc_url")

# A fresh clone has no deployments/ folder: local chains' records are not committed.
mkdir -p deployments
DEPLOYER_PRIVATE_KEY=$deployer_key BILLING=$(tools/foundry cast wallet address --private-key "$billing_key") \
  VERIFIER=$(tools/foundry cast wallet address --private-key "$verifier_key") \
  REGISTRAR=$(tools/foundry cast wallet address --private-key "$registrar_key") \
  tools/foundry forge script contracts/script/Deploy.s.sol \
  --rpc-url "$rpc_url" --broadcast --quiet
record="deployments/$chain_id.json"

target_dir=${CARGO_TARGET_DIR:-$root/target}
RPC_URL=$rpc_url WS_URL=${rpc_url/http/ws} DEPLOYMENTS_FILE=$record DATABASE_URL=$database_url \
  FINALITY=${FINALITY:-0} METRICS_ADDR=${INDEXER_METRICS_ADDR:-127.0.0.1:9101} \
  "$target_dir/debug/indexer" run >.data/indexer.log 2>&1 &
indexer_pid=$!

# wait_for <what> <log> <pid> <tries> <command...>: runs the command every 0.2 s until it succeeds;
# fails the start when the process exits or the tries run out.
wait_for() {
  local what=$1 log=$2 pid=$3 tries=$4 attempt
  shift 4
  for attempt in $(seq 1 "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    if [ "$attempt" = "$tries" ] || ! kill -0 "$pid" 2>/dev/null; then
      echo "dev: $what did not start; see $log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

# A local IPFS node (Kubo RPC API) for storage, fresh like the chain.
ipfs_api_port=${IPFS_API_PORT:-5001}
ipfs_gateway_port=${IPFS_GATEWAY_PORT:-8081}
rm -rf .data/ipfs
scripts/ipfs.sh "$root/.data/ipfs" "$ipfs_api_port" "$ipfs_gateway_port" $((ipfs_api_port + 1)) >.data/ipfs.log 2>&1 &
ipfs_pid=$!
wait_for "the IPFS node" .data/ipfs.log "$ipfs_pid" 300 curl -fs -X POST "http://127.0.0.1:$ipfs_api_port/api/v0/id"

# A local Arweave gateway (arlocal) and a funded wallet the API pays uploads with, fresh too.
arlocal_port=${ARLOCAL_PORT:-1984}
rm -rf .data/arlocal
mkdir -p .data/arlocal
arweave_address=$(node tools/arlocal/wallet.cjs .data/arlocal/wallet.json)
node tools/arlocal/serve.cjs "$arlocal_port" .data/arlocal/db >.data/arlocal.log 2>&1 &
arlocal_pid=$!
wait_for arlocal .data/arlocal.log "$arlocal_pid" 150 curl -fs "http://127.0.0.1:$arlocal_port/info"
curl -fs "http://127.0.0.1:$arlocal_port/mint/$arweave_address/100000000000000000" >/dev/null

# The package registry site builds install from: verdaccio, a caching mirror of npmjs (kept in
# .data/registry between runs, so a package is fetched once).
registry_port=${REGISTRY_PORT:-4873}
mkdir -p .data/registry
cat >.data/registry/config.yaml <<YAML
storage: $root/.data/registry/storage
uplinks:
  npmjs:
    url: https://registry.npmjs.org/
packages:
  '**':
    access: \$all
    publish: \$authenticated
    proxy: npmjs
log: { type: stdout, format: pretty, level: warn }
YAML
node_modules/.bin/verdaccio --config .data/registry/config.yaml --listen "127.0.0.1:$registry_port" \
  >.data/registry.log 2>&1 &
registry_pid=$!
wait_for "the package registry" .data/registry.log "$registry_pid" 150 curl -fs "http://127.0.0.1:$registry_port/-/ping"

# The gateway serves each site at http://<site>.localhost:<port> (browsers resolve *.localhost).
gateway_listen=${GATEWAY_LISTEN:-127.0.0.1:8090}

# The deployer holds every other role on a local chain (the deploy script's default), so it is the
# operator too. A fresh signing key per run: tokens from an earlier run are void.
API_LISTEN=$api_listen DATABASE_URL=$database_url RPC_URL=$rpc_url DEPLOYMENTS_FILE=$record \
  SIWE_DOMAIN=${SIWE_DOMAIN:-localhost:8080} SIWE_URI=${SIWE_URI:-http://localhost:8080} \
  JWT_SECRET=$(node -e 'console.log(require("crypto").randomBytes(32).toString("hex"))') \
  OPERATOR_PRIVATE_KEY=$deployer_key RELAYER_PRIVATE_KEY=$relayer_key VERIFIER_PRIVATE_KEY=$verifier_key \
  REGISTRAR_PRIVATE_KEY=$registrar_key PLATFORM_NAMESPACE=${PLATFORM_NAMESPACE:-dspace.test} \
  BILLING_PRIVATE_KEY=$billing_key METER_INTERVAL_SECS=${METER_INTERVAL_SECS:-60} \
  IPFS_API_URL=http://127.0.0.1:$ipfs_api_port IPFS_GATEWAY_URL=http://127.0.0.1:$ipfs_gateway_port \
  ARWEAVE_URL=http://127.0.0.1:$arlocal_port ARWEAVE_GATEWAY_URL=http://127.0.0.1:$arlocal_port \
  ARWEAVE_WALLET_FILE=$root/.data/arlocal/wallet.json \
  LISTENER_SECRET=${LISTENER_SECRET:-dev-listener-secret} CORS_ORIGINS=${CORS_ORIGINS:-*} \
  GATEWAY_LISTEN=$gateway_listen SITES_DOMAIN=localhost BUILD_REGISTRY_URL=http://127.0.0.1:$registry_port \
  BUILD_TOOLS_DIR="$root/tools/package-managers/node_modules" DATABASE_HOSTS=$database_hosts \
  SITE_URL_TEMPLATE="http://{site}.localhost:${gateway_listen##*:}" \
  RUST_LOG=${RUST_LOG:-info} "$target_dir/debug/api" >.data/api.log 2>&1 &
api_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://$api_listen/health" >/dev/null 2>&1 && break
  sleep 0.1
done

cat <<TXT

DecentraSpace local stack is up (Ctrl-C stops it).
  chain       $rpc_url (chain id $chain_id, anvil log: .data/anvil.log)
  database    $database_url
  deployment  $record
  indexer     pid $indexer_pid, metrics http://${INDEXER_METRICS_ADDR:-127.0.0.1:9101}/metrics (log: .data/indexer.log)
  api         http://$api_listen (docs http://$api_listen/docs, log: .data/api.log)
  gateway     http://<site>.localhost:${gateway_listen##*:} (sites deployed through POST /hosting/deploy)
  ipfs        API http://127.0.0.1:$ipfs_api_port, gateway http://127.0.0.1:$ipfs_gateway_port (log: .data/ipfs.log)
  arweave     arlocal http://127.0.0.1:$arlocal_port, wallet $arweave_address (log: .data/arlocal.log)
  registry    http://127.0.0.1:$registry_port, the npm mirror site builds install from (log: .data/registry.log)
  databases   managed databases (POST /database) are made on ${DATABASE_HOSTS:+DATABASE_HOSTS}${DATABASE_HOSTS:-the local server}
$(node -e '
  const d = require(process.argv[1]);
  for (const [name, addr] of Object.entries(d.contracts)) console.log(`  ${name.padEnd(16)}${addr}`);
  console.log(`  deploy block    ${d.deployBlock}`);
' "$root/$record")
TXT
wait "$anvil_pid"
