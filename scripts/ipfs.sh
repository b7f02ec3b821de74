#!/usr/bin/env bash
# A local IPFS node speaking the Kubo RPC API (js-ipfs from package.json), offline, on loopback:
#   scripts/ipfs.sh <repo dir> <api port> <gateway port> <rpc port>
# Initializes the repository on first use, then runs the daemon in the foreground (exec: the
# caller's process is the daemon, so killing it stops the node). Production points the API's
# IPFS_API_URL at Kubo instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
repo=$1 api_port=$2 gateway_port=$3 rpc_port=$4
export IPFS_PATH=$repo
# Node 20 lacks Promise.withResolvers, which js-ipfs's dependencies call.
export NODE_OPTIONS="--require $root/tools/ipfs/polyfill.cjs"
cli="$root/node_modules/ipfs/src/cli.js"
if [[ ! -f $repo/config ]]; then
  mkdir -p "$repo"
  node "$cli" init --profile=test --empty-repo >/dev/null
fi
# Loopback only, no swarm: a node for this machine, not the network.
node -e '
  const fs = require("fs");
  const [file, api, gateway, rpc] = process.argv.slice(1);
  const config = JSON.parse(fs.readFileSync(file, "utf8"));
  config.Addresses.Swarm = [];
  config.Addresses.API = `/ip4/127.0.0.1/tcp/${api}`;
  config.Addresses.Gateway = `/ip4/127.0.0.1/tcp/${gateway}`;
  config.Addresses.RPC = `/ip4/127.0.0.1/tcp/${rpc}`;
  config.Bootstrap = [];
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
' "$repo/config" "$api_port" "$gateway_port" "$rpc_port"
exec node "$cli" daemon --offline
