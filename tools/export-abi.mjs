#!/usr/bin/env node
// Exports the platform contracts' Foundry artifacts (ABI and bytecode) from out/ into abi/json/, where
// the `abi` crate's `sol!` bindings read them. With --check, writes nothing and fails when abi/json/
// differs from the fresh build, so committed bindings never drift from the contracts.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// The contracts the backend talks to, plus the proxy the deployment puts in front of the registries.
const CONTRACTS = [
  'AccountRegistry',
  'CreditLedger',
  'ServiceRegistry',
  'DomainRegistry',
  'Forwarder',
  'TestToken',
  'TestNameWrapper',
  'ERC1967Proxy',
];

const check = process.argv.includes('--check');

// JSON ABIs name an enum (`enum IAccountRegistry.Tier`) but not its variants, and alloy's `sol!` cannot
// resolve such names across interfaces; as plain `uint8` they bind cleanly, and the `abi` crate maps
// them to typed Rust enums.
function plainEnums(node) {
  if (Array.isArray(node)) return node.map(plainEnums);
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [key, value] of Object.entries(node)) {
    out[key] = key === 'internalType' && typeof value === 'string' && value.startsWith('enum ')
      ? value.replace(/^enum [^\[]+/, 'uint8')
      : plainEnums(value);
  }
  return out;
}
const outDir = join(root, 'abi', 'json');
let stale = [];

for (const name of CONTRACTS) {
  const artifactPath = join(root, 'out', `${name}.sol`, `${name}.json`);
  if (!existsSync(artifactPath)) {
    console.error(`missing artifact ${artifactPath}: run forge build first`);
    process.exit(2);
  }
  const artifact = JSON.parse(readFileSync(artifactPath, 'utf8'));
  const exported = {
    abi: artifact.abi.map(plainEnums),
    bytecode: { object: artifact.bytecode.object },
    deployedBytecode: { object: artifact.deployedBytecode.object },
  };
  const text = JSON.stringify(exported, null, 2) + '\n';
  const target = join(outDir, `${name}.json`);
  if (check) {
    if (!existsSync(target) || readFileSync(target, 'utf8') !== text) stale.push(name);
  } else {
    mkdirSync(outDir, { recursive: true });
    writeFileSync(target, text);
  }
}

if (check) {
  if (stale.length > 0) {
    console.error(`abi/json is out of date for: ${stale.join(', ')}. Run \`make abi\` and commit the result.`);
    process.exit(1);
  }
  console.log(`abi/json matches the contracts (${CONTRACTS.length} artifacts)`);
} else {
  console.log(`exported ${CONTRACTS.length} artifacts to abi/json`);
}
