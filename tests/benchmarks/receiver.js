// A plain Node.js webhook receiver (node's own http server, default settings: keep-alive with
// a 5 s idle timeout, backlog 511) for e2e.py --receiver node: the kind of receiver a customer
// runs, where sinks.py is a tuned raw protocol. Same control routes as sinks.py: GET /count,
// GET /times (CLOCK_MONOTONIC seconds: process.hrtime is that clock on Linux), POST /reset.
const http = require('http');
let times = [], ids = new Set(), requests = 0;
http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/count') {
    res.end(JSON.stringify({requests, distinct: ids.size, mails: 0, distinct_mails: 0}));
  } else if (req.method === 'GET' && req.url === '/times') {
    res.end(JSON.stringify({webhook: times, sms: [], email: []}));
  } else if (req.method === 'POST' && req.url === '/reset') {
    times = []; ids = new Set(); requests = 0;
    res.end('{}');
  } else {
    req.resume();
    req.on('end', () => {
      requests++;
      ids.add(req.headers['webhook-id']);
      times.push(Number(process.hrtime.bigint()) / 1e9);
      res.end('ok');
    });
  }
}).listen(parseInt(process.argv[2], 10), '127.0.0.1', () => console.log('ready'));
