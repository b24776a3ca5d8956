// wamp.io 0.0.4 (a Node WAMP v1 router) serving the benchmark's procedure and topic.
// Usage: node wampio_server.js PORT
process.EventEmitter = require('events').EventEmitter;
const { WebSocketServer } = require('ws');
const wamp = require('wamp.io');

const port = Number(process.argv[2]);
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  handleProtocols: (protocols) => (protocols.has('wamp') ? 'wamp' : false),
});
const app = wamp.attach(wss);
app.on('call', (procUri, args, cb) => {
  if (procUri === 'urn:bench:echo') cb(null, args[0]);
  else cb('no such procedure');
});
wss.on('listening', () => console.log('ready'));
