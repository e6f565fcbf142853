// The ONNX Runtime side of bench/runtime: the same measurement as `kiln bench --json`, in the
// same shape (synthetic inputs: floats uniform in [-1, 1), integers 0..99, symbolic first
// dimension = batch, other symbolic dimensions 1).
//   node ort_bench.js MODEL BATCH THREADS ITERS MAX_SECONDS
'use strict';
const ort = require('onnxruntime-node');

const [model, batch, threads, iters, maxSeconds] = process.argv.slice(2).map((v, i) => (i ? Number(v) : v));

function synthetic(meta) {
  const shape = meta.shape.map((d, i) => (typeof d === 'number' && d >= 0 ? d : i === 0 ? batch : 1));
  const n = shape.reduce((a, b) => a * b, 1);
  switch (meta.type) {
    case 'float32': return new ort.Tensor('float32', Float32Array.from({length: n}, () => Math.random() * 2 - 1), shape);
    case 'int64': return new ort.Tensor('int64', BigInt64Array.from({length: n}, () => BigInt(Math.floor(Math.random() * 100))), shape);
    case 'int32': return new ort.Tensor('int32', Int32Array.from({length: n}, () => Math.floor(Math.random() * 100)), shape);
    case 'bool': return new ort.Tensor('bool', Uint8Array.from({length: n}, () => (Math.random() < 0.5 ? 1 : 0)), shape);
    default: throw new Error(`input ${meta.name}: dtype ${meta.type} not handled by the benchmark`);
  }
}

(async () => {
  const baseRssKb = Math.round(process.memoryUsage().rss / 1024);
  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const feeds = {};
  for (const meta of session.inputMetadata) feeds[meta.name] = synthetic(meta);
  const warmup = Math.min(10, Math.max(2, Math.floor(iters / 10))); // as kiln bench
  let firstUs = 0;
  for (let i = 0; i < warmup; i++) {
    const a = process.hrtime.bigint();
    await session.run(feeds);
    if (i === 0) firstUs = Number(process.hrtime.bigint() - a) / 1e3;
  }
  const lat = [];
  const start = process.hrtime.bigint();
  while (lat.length < iters) {
    const a = process.hrtime.bigint();
    await session.run(feeds);
    const b = process.hrtime.bigint();
    lat.push(Number(b - a) / 1e3);
    if (Number(b - start) / 1e9 > maxSeconds) break;
  }
  const totalS = Number(process.hrtime.bigint() - start) / 1e9;
  lat.sort((x, y) => x - y);
  const pct = (p) => lat[Math.min(lat.length, Math.max(1, Math.ceil((p / 100) * lat.length))) - 1];
  console.log(JSON.stringify({
    p50_us: pct(50), p90_us: pct(90), p99_us: pct(99), throughput_per_s: (batch * lat.length) / totalS,
    batch, threads, iters: lat.length, load_ms: loadMs, first_run_us: firstUs, peak_rss_kb: process.resourceUsage().maxRSS, base_rss_kb: baseRssKb,
  }));
})().catch((e) => {
  console.error(`ort_bench: ${e.message}`);
  process.exit(2);
});
