#!/usr/bin/env node
// blendfuse benchmarks — the ONNX Runtime (CPU) peer: the models of bench/peers/bench_torch.cpp,
// exported by export_onnx.py, run with onnxruntime-node and reported as Google Benchmark JSON
// under the LibTorch peer's names with backend `ort` (fusion/infer/b1/ort, ...), so that
// bench/compare.py puts them next to ours and LibTorch's.
//
//   node bench_ort.js [--threads=N] [--filter=REGEX] [--reps=N] [--models=DIR]
//                     [--benchmark_out=FILE] [--verify] [--profile=DIR] [--iters=N]
//
// Threads: --threads, else OMP_NUM_THREADS, else 1 (intraOpNumThreads; interOpNumThreads 1,
// sequential execution, graphOptimizationLevel 'all'). Each benchmark: create the session, run
// once and compare the output with PyTorch's (export_onnx.py wrote both; a mismatch aborts), warm
// up, then REPS repetitions, each running the model until min_time has passed (1 s for batch-1
// fusion, 2 s otherwise, one call for wav2vec2 on 10 s), as the C++ programs do. real_time is
// wall time per call, cpu_time this process's CPU time per call (all its threads), both in ms.
// --verify: only the output checks. --profile=DIR: ORT's per-node profile of --iters calls (20)
// per model, summarised per op type (the raw JSON stays in DIR).
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const ort = require('onnxruntime-node');

function parseArgs() {
  const a = {};
  for (const s of process.argv.slice(2)) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(s);
    if (!m) throw new Error(`unrecognized argument ${s}`);
    a[m[1]] = m[2] === undefined ? true : m[2];
  }
  return a;
}
const args = parseArgs();
const threads = Math.max(1, parseInt(args.threads || process.env.OMP_NUM_THREADS || '1', 10));
const reps = Math.max(1, parseInt(args.reps || args.benchmark_repetitions || '3', 10));
const filter = new RegExp(args.filter || args.benchmark_filter || '.');
const modelDir = path.resolve(args.models || path.join(__dirname, 'models'));
const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, 'manifest.json'), 'utf8'));

// benchmark name → exported model, minimum time per repetition (s) or a fixed iteration count
const BENCHMARKS = [
  {name: 'fusion/infer/b1/ort', model: 'fusion_b1', minTime: 1.0},
  {name: 'fusion/infer/b32/ort', model: 'fusion_b32', minTime: 2.0},
  {name: 'fusion/infer/b1/ort_frozen', model: 'fusion_frozen_b1', minTime: 1.0},
  {name: 'fusion/infer/b32/ort_frozen', model: 'fusion_frozen_b32', minTime: 2.0},
  {name: 'wav2vec2/base/1s/ort', model: 'w2v_1s', minTime: 2.0},
  {name: 'wav2vec2/base/10s/ort', model: 'w2v_10s', iterations: 1},
];

function readF32(file) {
  const b = fs.readFileSync(path.join(modelDir, file));
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

function sessionOptions(extra) {
  return Object.assign({
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  }, extra || {});
}

function feedsOf(entry) {
  const feeds = {};
  for (const [n, inp] of Object.entries(entry.inputs)) feeds[n] = new ort.Tensor('float32', readF32(inp.file), inp.shape);
  return feeds;
}

/// max |ort − torch| / max |torch| (relative to the output's scale); throws above tol.
function check(name, out, entry, tol = 1e-4) {
  const ref = readF32(entry.output.file);
  const got = out.data;
  if (got.length !== ref.length) throw new Error(`${name}: output has ${got.length} values, PyTorch's ${ref.length}`);
  let maxErr = 0, maxRef = 0;
  for (let i = 0; i < ref.length; ++i) {
    maxErr = Math.max(maxErr, Math.abs(got[i] - ref[i]));
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
  }
  const rel = maxErr / maxRef;
  const ok = Number.isFinite(rel) && rel <= tol;
  process.stderr.write(`${ok ? 'ok  ' : 'FAIL'} ${name}: max |ort - torch| = ${maxErr.toExponential(2)} (max |torch| ${maxRef.toFixed(3)}, relative ${rel.toExponential(2)})\n`);
  if (!ok) throw new Error(`${name}: output differs from PyTorch's (relative ${rel}, tolerance ${tol})`);
  return rel;
}

function nowMs() { return Number(process.hrtime.bigint()) / 1e6; }
function cpuMs() { const u = process.cpuUsage(); return (u.user + u.system) / 1e3; }

async function runBenchmark(b, entry) {
  const session = await ort.InferenceSession.create(path.join(modelDir, entry.file), sessionOptions());
  const feeds = feedsOf(entry);
  const outName = session.outputNames[0];
  check(b.name, (await session.run(feeds))[outName], entry);
  // warm-up: the first calls allocate the arena and pre-pack what was not pre-packed at load
  for (let i = 0; i < (b.iterations ? 1 : 2); ++i) await session.run(feeds);
  const runs = [];
  for (let r = 0; r < reps; ++r) {
    let iters = 0;
    const t0 = nowMs(), c0 = cpuMs();
    let t1 = t0;
    for (;;) {
      await session.run(feeds);
      ++iters;
      t1 = nowMs();
      if (b.iterations ? iters >= b.iterations : (t1 - t0) >= b.minTime * 1e3) break;
    }
    const c1 = cpuMs();
    runs.push({iterations: iters, real_time: (t1 - t0) / iters, cpu_time: (c1 - c0) / iters});
  }
  await session.release();
  return runs;
}

function gbName(b) {
  return b.name + (b.iterations ? `/iterations:${b.iterations}` : `/min_time:${b.minTime.toFixed(3)}`) + '/real_time';
}

function counters(entry, realMs) {
  const c = {'GFLOP/s': entry.flops * 1e-9 / (realMs * 1e-3), fps: entry.frames / (realMs * 1e-3)};
  return c;
}

function aggregates(b, entry, runs, familyIndex) {
  const n = runs.length;
  const rt = runs.map(r => r.real_time), ct = runs.map(r => r.cpu_time);
  const mean = v => v.reduce((x, y) => x + y, 0) / v.length;
  const median = v => { const s = [...v].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  const stddev = v => { if (v.length < 2) return 0; const m = mean(v); return Math.sqrt(v.reduce((x, y) => x + (y - m) ** 2, 0) / (v.length - 1)); };
  const out = [];
  for (const [agg, f] of [['mean', mean], ['median', median], ['stddev', stddev]]) {
    const r = f(rt), c = f(ct);
    const e = {name: `${gbName(b)}_${agg}`, family_index: familyIndex, per_family_instance_index: 0, run_name: gbName(b),
               run_type: 'aggregate', repetitions: n, threads: 1, aggregate_name: agg, aggregate_unit: 'time',
               iterations: n, real_time: r, cpu_time: c, time_unit: 'ms'};
    if (agg !== 'stddev') Object.assign(e, counters(entry, r));
    out.push(e);
  }
  const m = mean(rt);
  out.push({name: `${gbName(b)}_cv`, family_index: familyIndex, per_family_instance_index: 0, run_name: gbName(b),
            run_type: 'aggregate', repetitions: n, threads: 1, aggregate_name: 'cv', aggregate_unit: 'percentage',
            iterations: n, real_time: stddev(rt) / m, cpu_time: stddev(ct) / mean(ct), time_unit: 'ms'});
  return out;
}

function context() {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    host_name: os.hostname(),
    executable: `${process.execPath} ${__filename}`,
    num_cpus: cpus.length,
    mhz_per_cpu: cpus.length ? cpus[0].speed : 0,
    load_avg: os.loadavg(),
    implementation: `onnxruntime-node ${ort.env.versions.node} (onnxruntime-common ${ort.env.versions.common})`,
    node_version: process.version,
    omp_threads: String(threads),
    ort_session: JSON.stringify(sessionOptions()),
    models: modelDir,
    exported_with: `torch ${manifest.torch}, torchaudio ${manifest.torchaudio}, opset ${manifest.opset}`,
  };
}

/// ORT's profile (one JSON event per node run) → ms per call by op type and by node.
function summariseProfile(file, calls, label) {
  const ev = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byOp = new Map(), byNode = new Map();
  let total = 0;
  for (const e of ev) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args.op_name, node = e.name.replace(/_kernel_time$/, '');
    const ms = e.dur / 1e3;
    total += ms;
    byOp.set(op, (byOp.get(op) || 0) + ms);
    const k = `${op} ${node}`;
    const prev = byNode.get(k) || {ms: 0, shape: ''};
    prev.ms += ms;
    if (e.args.output_type_shape) prev.shape = JSON.stringify(e.args.output_type_shape.map(o => Object.values(o)[0]));
    byNode.set(k, prev);
  }
  const runs = ev.filter(e => e.cat === 'Session' && e.name === 'model_run').map(e => e.dur / 1e3);
  const lines = [`### ${label}: ORT profile, ${calls} calls, ${threads} thread(s)`, '',
                 `model_run median ${runs.length ? runs.sort((x, y) => x - y)[runs.length >> 1].toFixed(2) : '?'} ms; ` +
                 `sum of node kernel times ${(total / calls).toFixed(2)} ms per call`, '',
                 '| op type | ms per call | share |', '|---|---|---|'];
  for (const [op, ms] of [...byOp].sort((x, y) => y[1] - x[1])) lines.push(`| ${op} | ${(ms / calls).toFixed(3)} | ${(100 * ms / total).toFixed(1)} % |`);
  lines.push('', '| node (op name) | ms per call | output shape |', '|---|---|---|');
  for (const [k, v] of [...byNode].sort((x, y) => y[1].ms - x[1].ms).slice(0, 40))
    lines.push(`| ${k} | ${(v.ms / calls).toFixed(3)} | ${v.shape} |`);
  return lines.join('\n') + '\n';
}

async function profile(dir) {
  fs.mkdirSync(dir, {recursive: true});
  const calls = parseInt(args.iters || '20', 10);
  let md = '';
  for (const b of BENCHMARKS) {
    if (!filter.test(b.name)) continue;
    const entry = manifest.models[b.model];
    const prefix = path.join(dir, b.model);
    const session = await ort.InferenceSession.create(path.join(modelDir, entry.file),
        sessionOptions({enableProfiling: true, profileFilePrefix: prefix, optimizedModelFilePath: `${prefix}.optimized.onnx`}));
    const feeds = feedsOf(entry);
    for (let i = 0; i < 3; ++i) await session.run(feeds);  // warm-up (in the profile too, dropped below)
    for (let i = 0; i < calls; ++i) await session.run(feeds);
    session.endProfiling();
    await session.release();
    // the newest profile file with this prefix; drop the warm-up calls' events
    const f = fs.readdirSync(dir).filter(n => n.startsWith(path.basename(prefix) + '_') && n.endsWith('.json'))
      .map(n => path.join(dir, n)).sort((x, y) => fs.statSync(y).mtimeMs - fs.statSync(x).mtimeMs)[0];
    const ev = JSON.parse(fs.readFileSync(f, 'utf8'));
    const runStarts = ev.filter(e => e.cat === 'Session' && e.name === 'model_run').map(e => e.ts).sort((x, y) => x - y);
    const keepFrom = runStarts[3];
    fs.writeFileSync(f, JSON.stringify(ev.filter(e => e.cat !== 'Node' && e.name !== 'model_run' ? true : e.ts >= keepFrom)));
    md += summariseProfile(f, calls, b.name) + '\n';
  }
  process.stdout.write(md);
  fs.writeFileSync(path.join(dir, 'profile.md'), md);
}

async function main() {
  if (args.profile) return profile(path.resolve(args.profile));
  if (args.verify) {
    for (const b of BENCHMARKS) {
      if (!filter.test(b.name)) continue;
      const entry = manifest.models[b.model];
      const session = await ort.InferenceSession.create(path.join(modelDir, entry.file), sessionOptions());
      check(b.name, (await session.run(feedsOf(entry)))[session.outputNames[0]], entry);
      await session.release();
    }
    return;
  }
  const result = {context: context(), benchmarks: []};
  let family = 0;
  for (const b of BENCHMARKS) {
    if (!filter.test(b.name)) continue;
    const entry = manifest.models[b.model];
    if (!entry) { process.stderr.write(`skip ${b.name}: ${b.model} not exported (export_onnx.py)\n`); continue; }
    const runs = await runBenchmark(b, entry);
    runs.forEach((r, i) => {
      result.benchmarks.push(Object.assign({name: gbName(b), family_index: family, per_family_instance_index: 0, run_name: gbName(b),
        run_type: 'iteration', repetitions: reps, repetition_index: i, threads: 1, iterations: r.iterations,
        real_time: r.real_time, cpu_time: r.cpu_time, time_unit: 'ms'}, counters(entry, r.real_time)));
      process.stdout.write(`${gbName(b).padEnd(52)} ${r.real_time.toFixed(2).padStart(10)} ms ${r.cpu_time.toFixed(2).padStart(10)} ms ${String(r.iterations).padStart(6)}  ${counters(entry, r.real_time)['GFLOP/s'].toFixed(1)} GFLOP/s\n`);
    });
    if (reps > 1) result.benchmarks.push(...aggregates(b, entry, runs, family));
    ++family;
  }
  const out = args.benchmark_out;
  if (out) fs.writeFileSync(out, JSON.stringify(result, null, 1));
}

main().catch(e => { process.stderr.write(`${e.stack || e}\n`); process.exit(1); });
