// A local Arweave gateway (arlocal from package.json) on loopback only:
//   node tools/arlocal/serve.cjs <port> <data dir>
// arlocal listens on every interface; its server is made to bind 127.0.0.1 instead. The data
// dir is removed when it stops. Production points the API's ARWEAVE_URL at a real node.
const http = require('http');

const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (port, ...rest) {
  return typeof port === 'number' ? listen.call(this, port, '127.0.0.1', ...rest) : listen.call(this, port, ...rest);
};

const fs = require('fs');
const path = require('path');
const ArLocal = require('arlocal').default;
const [port, dir] = process.argv.slice(2);
if (!port || !dir) {
  console.error('usage: serve.cjs <port> <data dir>');
  process.exit(2);
}
// arlocal writes a `logs` file into its working directory: keep it beside the data.
const dbPath = path.resolve(dir);
fs.mkdirSync(path.dirname(dbPath), { recursive: true });
process.chdir(path.dirname(dbPath));
const app = new ArLocal(Number(port), false, dbPath, false);
app.start().then(() => console.log(`arlocal on http://127.0.0.1:${port}`));
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => app.stop().finally(() => process.exit(0)));
}
