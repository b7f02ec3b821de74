// A new Arweave wallet (a 4096-bit RSA JWK, as Arweave wallets are) for a local gateway:
//   node tools/arlocal/wallet.cjs <file>
// Writes the JWK (mode 0600) and prints its address (base64url SHA-256 of the modulus).
const crypto = require('crypto');
const fs = require('fs');

const file = process.argv[2];
if (!file) {
  console.error('usage: wallet.cjs <file>');
  process.exit(2);
}
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 4096, publicExponent: 65537 });
const jwk = privateKey.export({ format: 'jwk' });
fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
const address = crypto.createHash('sha256').update(Buffer.from(jwk.n, 'base64url')).digest('base64url');
console.log(address);
