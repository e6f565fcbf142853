// The Node.js + ONNX Runtime peer of bench/serve: TF Serving's REST predict API for one ONNX
// model on node's own http module (no framework) and one onnxruntime-node session.
//   node ort_server.js MODEL NAME PORT [INTRA_OP_THREADS]     (NODE_PATH = the ORT peer's node_modules)
// POST /v1/models/NAME:predict  {"instances": [row, ...]}  ->  {"predictions": [row, ...]}
// GET  /v1/models/NAME          ->  TF Serving's model status document
// Listens on 127.0.0.1 only. INTRA_OP_THREADS defaults to all cores.
'use strict';
const http = require('http');
const os = require('os');
const ort = require('onnxruntime-node');

const [model, name, portArg, threadsArg] = process.argv.slice(2);
if (!model || !name || !portArg) {
  console.error('usage: node ort_server.js MODEL NAME PORT [INTRA_OP_THREADS]');
  process.exit(2);
}
const port = Number(portArg);
const threads = threadsArg ? Number(threadsArg) : os.cpus().length;
const MAX_BODY_BYTES = 64 << 20;
const predictPath = `/v1/models/${name}:predict`;
const statusPath = `/v1/models/${name}`;
const STATUS = JSON.stringify({
  model_version_status: [{version: '1', state: 'AVAILABLE', status: {error_code: 'OK', error_message: ''}}],
});

// The shape of a nested JSON array (the lengths along its first elements).
function shapeOf(v) {
  const shape = [];
  while (Array.isArray(v)) {
    shape.push(v.length);
    v = v[0];
  }
  return shape;
}

// Copies a nested array of the given shape into out at offset; returns the next offset. Throws on
// a ragged or non-numeric array.
function flatten(v, shape, depth, out, offset) {
  if (depth === shape.length) {
    if (typeof v !== 'number') throw new Error('instances: expected a number');
    out[offset] = v;
    return offset + 1;
  }
  if (!Array.isArray(v) || v.length !== shape[depth]) throw new Error('instances: ragged list');
  for (const e of v) offset = flatten(e, shape, depth + 1, out, offset);
  return offset;
}

// Row r of a row-major tensor of the given dims, as nested arrays.
function unflatten(data, dims, depth, offset) {
  if (depth === dims.length) return data[offset];
  const stride = dims.slice(depth + 1).reduce((a, b) => a * b, 1);
  const out = new Array(dims[depth]);
  for (let i = 0; i < dims[depth]; i++) out[i] = unflatten(data, dims, depth + 1, offset + i * stride);
  return out;
}

function reply(res, code, obj) {
  const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
  res.writeHead(code, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body)});
  res.end(body);
}

async function predict(session, input, body) {
  const instances = JSON.parse(body).instances;
  if (!Array.isArray(instances) || instances.length === 0) throw new Error('"instances" must be a non-empty list');
  const shape = shapeOf(instances);
  const want = input.shape;
  if (shape.length !== want.length) throw new Error(`instances: rank ${shape.length}, the model wants ${want.length}`);
  for (let i = 1; i < want.length; i++) {
    if (typeof want[i] === 'number' && want[i] >= 0 && want[i] !== shape[i]) {
      throw new Error(`instances: dimension ${i} is ${shape[i]}, the model wants ${want[i]}`);
    }
  }
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  flatten(instances, shape, 0, data, 0);
  const out = await session.run({[input.name]: new ort.Tensor('float32', data, shape)});
  const t = out[session.outputNames[0]];
  const predictions = new Array(t.dims[0]);
  for (let r = 0; r < t.dims[0]; r++) predictions[r] = unflatten(t.data, t.dims, 1, r * (t.data.length / t.dims[0]));
  return {predictions};
}

(async () => {
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const input = session.inputMetadata[0];
  if (session.inputMetadata.length !== 1 || input.type !== 'float32') {
    throw new Error('the peer serves models with one float32 input only');
  }
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === statusPath) return reply(res, 200, STATUS);
    if (req.method !== 'POST' || req.url !== predictPath) return reply(res, 404, {error: `no route ${req.method} ${req.url}`});
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      predict(session, input, Buffer.concat(chunks).toString('utf8'))
        .then((r) => reply(res, 200, r))
        .catch((e) => reply(res, 400, {error: e.message}));
    });
  });
  server.listen(port, '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0)); // a benchmark peer: nothing to drain
})().catch((e) => {
  console.error(`ort_server: ${e.message}`);
  process.exit(2);
});
