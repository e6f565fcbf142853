// Runs an ONNX model once in ONNX Runtime (npm onnxruntime-node) on one float32 input given as raw
// little-endian bytes, and writes its first output the same way: the independent runtime that
// test_train_export.py checks kiln's exported models against.
//   node ort_run.js MODEL INPUT_NAME DIMS(comma-separated) INPUT.f32 OUTPUT.f32
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

const [model, name, dims, inPath, outPath] = process.argv.slice(2);

(async () => {
  const session = await ort.InferenceSession.create(model, {intraOpNumThreads: 1, graphOptimizationLevel: 'disabled'});
  const bytes = fs.readFileSync(inPath);
  const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const result = await session.run({[name]: new ort.Tensor('float32', Float32Array.from(data), dims.split(',').map(Number))});
  const out = result[session.outputNames[0]];
  if (out.type !== 'float32') throw new Error(`output ${session.outputNames[0]} is ${out.type}, expected float32`);
  fs.writeFileSync(outPath, Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength));
  console.log(JSON.stringify({output: session.outputNames[0], dims: out.dims}));
})().catch((e) => {
  console.error(`ort_run: ${e.message}`);
  process.exit(2);
});
