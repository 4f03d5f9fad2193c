// The page of `vqdraw export --web` (docs/export.md): the exported graphs run by onnxruntime-web
// (WebAssembly, vendored beside this file: no network).
//   encoder.onnx: data (B, C, H, W) float32 in [0, 1] -> codes (B, N) int64 (greedy)
//   decoder.onnx: codes (B, N) int64 -> data (B, C, H, W) float32 in [0, 1],
//                 and stages (B, N, C, H, W): the data after each stage
// A .vqd file (versions 1 and 2) is read here, exactly per docs/vqd-format.md (readVqd below).
"use strict";

ort.env.wasm.numThreads = 1;  // threads need a cross-origin-isolated page; one is enough here
ort.env.wasm.wasmPaths = "./";

const $ = (id) => document.getElementById(id);
const ITEMS_SHOWN = 256;  // thumbnails of a .vqd file's first items
let meta, encoder, decoder, fingerprint;
let codes = [];    // the code shown: one choice per stage
let used = 0;      // how many of its stages are decoded (fewer for a .vqd file of a code prefix)
let busy = Promise.resolve();

async function main() {
  meta = await (await fetch("model.json")).json();
  [encoder, decoder] = await Promise.all([
    ort.InferenceSession.create(meta.encoder.file), ort.InferenceSession.create(meta.decoder.file)]);
  fingerprint = meta.fingerprint;
  const [c, h, w] = meta.data_shape;
  $("about").textContent = `A ${w}×${h} ${c === 1 ? "grey" : "colour"} image as ${meta.stages} choices ` +
    `of ${meta.options} options (${bitsPerItem(meta.options, meta.stages)} bits). ` +
    `Model ${meta.fingerprint}, ${meta.likelihood} likelihood.`;
  const scale = Math.max(1, Math.floor(280 / Math.max(h, w)));
  for (const id of ["draw", "output"]) { $(id).width = w * scale; $(id).height = h * scale; }
  $("input").width = w; $("input").height = h;
  buildCode();
  buildStages();
  setupDrawing();
  $("sample").onclick = () => run(() => decode(codes.map(() => Math.floor(Math.random() * meta.options))));
  $("reencode").onclick = () => run(encode);
  $("vqd").onchange = () => { if ($("vqd").files.length) run(() => openVqd($("vqd").files[0])); };
  clearDrawing();
  await run(encode);
  document.body.dataset.ready = "yes";  // for tests: the model is loaded and the first code shown
}

// one action at a time, in order; the page says when one fails
function run(action) {
  busy = busy.then(action).catch((err) => { $("status").textContent = `error: ${err.message || err}`; });
  return busy;
}

// ---- the code: hex (the .vqd payload field of one item) and one menu per stage

function buildCode() {
  const box = $("code");
  for (let i = 0; i < meta.stages; i++) {
    const label = document.createElement("label");
    const select = document.createElement("select");
    for (let k = 0; k < meta.options; k++) select.add(new Option(String(k), String(k)));
    select.onchange = () => run(() => {
      const next = codes.slice(); next[i] = Number(select.value);
      return decode(next, Math.max(used, i + 1));
    });
    label.append(select, document.createElement("br"), String(i + 1));
    box.append(label);
  }
  codes = new Array(meta.stages).fill(0);
}

function buildStages() {
  const [, h, w] = meta.data_shape;
  for (let i = 0; i < meta.stages; i++) {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    canvas.className = "stage";
    figure.append(canvas, Object.assign(document.createElement("figcaption"), { textContent: String(i + 1) }));
    $("stages").append(figure);
  }
}

// the first `n` codes as one mixed-radix number (first stage most significant), in hex digits
function hexOf(code, n) {
  const K = BigInt(meta.options);
  let value = 0n;
  for (let i = 0; i < n; i++) value = value * K + BigInt(code[i]);
  return value.toString(16).padStart(Math.ceil(bitsPerItem(meta.options, n) / 4), "0");
}

function showCode() {
  $("code").querySelectorAll("select").forEach((s, i) => { s.value = String(codes[i]); s.disabled = i >= used; });
  $("hex").textContent = hexOf(codes, used);
  $("list").textContent = `[${codes.slice(0, used).join(", ")}]` + (used < meta.stages ? ` (the first ${used} stages)` : "");
  $("code").dataset.codes = codes.slice(0, used).join(",");  // for tests
}

// ---- running the graphs

// codes: arrays of N choices -> the stages output, (B, N, C, H, W) float32
async function runDecoder(items) {
  const flat = BigInt64Array.from(items.flat().map(BigInt));
  const input = new ort.Tensor("int64", flat, [items.length, meta.stages]);
  const out = await decoder.run({ [meta.decoder.input.name]: input });
  return out[meta.decoder.stages.name].data;
}

async function decode(next, n = meta.stages) {
  codes = next; used = n;
  showCode();
  const t0 = performance.now();
  const stages = await runDecoder([codes]);
  const size = meta.data_shape.reduce((a, b) => a * b, 1);
  const canvases = document.querySelectorAll("#stages canvas");
  for (let i = 0; i < meta.stages; i++) {
    const show = i < used;
    canvases[i].parentElement.style.opacity = show ? "1" : "0.25";
    paint(canvases[i], show ? stages.subarray(i * size, (i + 1) * size) : new Float32Array(size));
  }
  paint($("output"), stages.subarray((used - 1) * size, used * size));
  $("status").textContent = `decoded in ${(performance.now() - t0).toFixed(0)} ms`;
}

async function encode() {
  const t0 = performance.now();
  const pixels = readDrawing();
  paint($("input"), pixels);
  const input = new ort.Tensor("float32", pixels, [1, ...meta.data_shape]);
  const out = (await encoder.run({ [meta.encoder.input.name]: input }))[meta.encoder.output.name];
  const took = performance.now() - t0;
  await decode(Array.from(out.data, Number));
  $("status").textContent += `; encoded in ${took.toFixed(0)} ms`;
}

// data (C, H, W) in [0, 1] -> the canvas, each pixel a block of the canvas's size / (H, W)
function paint(canvas, data) {
  const [c, h, w] = meta.data_shape;
  const small = new ImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    for (let ch = 0; ch < 3; ch++) small.data[4 * p + ch] = 255 * data[(c === 1 ? 0 : ch) * h * w + p];
    small.data[4 * p + 3] = 255;
  }
  const ctx = canvas.getContext("2d");
  if (canvas.width === w && canvas.height === h) { ctx.putImageData(small, 0, 0); return; }
  const tmp = document.createElement("canvas");
  tmp.width = w; tmp.height = h;
  tmp.getContext("2d").putImageData(small, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

// ---- drawing

// the drawing, reduced to the model's size: (C, H, W) float32, each value k / 255
function readDrawing() {
  const [c, h, w] = meta.data_shape;
  const tmp = document.createElement("canvas");
  tmp.width = w; tmp.height = h;
  const ctx = tmp.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage($("draw"), 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const out = new Float32Array(c * h * w);
  for (let p = 0; p < h * w; p++) {
    for (let ch = 0; ch < c; ch++) {  // grey: the rounded mean of red, green and blue
      out[ch * h * w + p] = (c === 1 ? Math.round((rgba[4 * p] + rgba[4 * p + 1] + rgba[4 * p + 2]) / 3) : rgba[4 * p + ch]) / 255;
    }
  }
  return out;
}

function clearDrawing() {
  const ctx = $("draw").getContext("2d");
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, $("draw").width, $("draw").height);
}

function setupDrawing() {
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  let last = null;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.onpointerdown = (e) => { last = at(e); canvas.setPointerCapture(e.pointerId); stroke(at(e)); };
  canvas.onpointermove = (e) => { if (last) stroke(at(e)); };
  canvas.onpointerup = () => { if (last) { last = null; run(encode); } };
  function stroke(p) {
    ctx.strokeStyle = "white";
    ctx.lineWidth = Number($("brush").value);
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...p);
    ctx.stroke();
    last = p;
  }
  $("clear").onclick = () => { clearDrawing(); run(encode); };
}

// ---- .vqd files

async function openVqd(file) {
  $("items").replaceChildren();
  $("vqdinfo").textContent = "";
  let vqd;
  try {
    vqd = readVqd(new Uint8Array(await file.arrayBuffer()), meta);
  } catch (err) {
    $("vqdinfo").textContent = `${file.name}: ${err.message}`;
    $("vqdinfo").className = "error";
    throw err;
  }
  $("vqdinfo").className = "";
  const shown = vqd.codes.slice(0, ITEMS_SHOWN);
  $("vqdinfo").textContent = `${file.name}: version ${vqd.version}, ${vqd.count} image${vqd.count === 1 ? "" : "s"} ` +
    `of ${vqd.stages} stages (${bitsPerItem(vqd.K, vqd.stages)} bits each), ${vqd.bytes} bytes` +
    (vqd.count > shown.length ? `; the first ${shown.length} shown` : "") + ". Pick one:";
  const size = meta.data_shape.reduce((a, b) => a * b, 1);
  const [, h, w] = meta.data_shape;
  const padded = shown.map((c) => c.concat(new Array(meta.stages - vqd.stages).fill(0)));
  for (let start = 0; start < padded.length; start += 64) {  // a batch of items per decoder call
    const batch = padded.slice(start, start + 64);
    const stages = await runDecoder(batch);
    batch.forEach((code, j) => {
      const canvas = document.createElement("canvas");
      canvas.width = w; canvas.height = h;
      canvas.className = "item";
      canvas.title = `item ${start + j}: ${hexOf(code, vqd.stages)}`;
      const at = (j * meta.stages + vqd.stages - 1) * size;
      paint(canvas, stages.subarray(at, at + size));
      canvas.onclick = () => run(() => decode(code, vqd.stages));
      $("items").append(canvas);
    });
  }
  if (padded.length) await decode(padded[0], vqd.stages);
}

class VqdFormatError extends Error {}

const MODALITIES = { 1: ["image", 3], 2: ["volume", 4], 3: ["sequence", 2], 4: ["text", 2], 5: ["audio", 2], 6: ["speech", 3] };
const MAX_MIXED_RADIX_BITS = 16384;

// ceil(n log2 K), exactly: the bit length of K^n - 1
function bitsPerItem(K, n) {
  if ((K & (K - 1)) === 0) return n * Math.log2(K);
  return (BigInt(K) ** BigInt(n) - 1n).toString(2).length;
}

let crcTable = null;
function crc32(bytes) {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[i] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

// A .vqd file (bytes) -> {version, modality, shape, K, stages, count, codes: count arrays of n
// choices}, checked by the reading rules of docs/vqd-format.md in their order (model: model.json's
// content, for rule 5); a VqdFormatError in one line at the first failure. Versions 1 and 2.
function readVqd(data, model) {
  const fail = (message) => { throw new VqdFormatError(message); };
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const len = data.length;
  // rule 1
  if (len === 0) fail("empty .vqd file (0 bytes)");
  const magic = [0x56, 0x51, 0x44, 0x52];  // VQDR
  const head = Array.from(data.subarray(0, 4));
  if (head.some((b, i) => b !== magic[i])) fail(`not a .vqd file (starts with ${hex(head)}, expected 56514452 = b'VQDR')`);
  if (len < 4) fail(`truncated .vqd file: expected at least 40 bytes, got ${len}`);
  // rule 2
  const version = len > 4 ? data[4] : 1;
  if (version === 3) fail("entropy-coded .vqd file (version 3): decode it with `vqdraw decode`; this page reads versions 1 and 2");
  if (version !== 1 && version !== 2) fail(`unsupported .vqd format version ${version} (this page reads versions 1 and 2)`);
  if (len < 40) fail(`truncated .vqd file: expected at least 40 bytes, got ${len}`);
  const flags = data[5];
  const fp = hex(data.subarray(6, 22));
  let modality = "image", shape, at, extra = 0, length = null;
  if (version === 1) {
    shape = [view.getUint16(22, true), view.getUint16(24, true), view.getUint16(26, true)];
    at = 28;
  } else {
    const code = data[22], dims = data[23];
    if (!(code in MODALITIES)) fail(`invalid .vqd header: unknown modality code ${code} (known: 1 image, 2 volume, 3 sequence, 4 text, 5 audio, 6 speech)`);
    let want;
    [modality, want] = MODALITIES[code];
    if (dims !== want) fail(`invalid .vqd header: ${modality} data with ${dims} dimensions (must be ${want})`);
    extra = { text: 8, audio: 12, speech: 12 }[modality] || 0;
    const fixed = 36 + 2 * dims + extra;
    if (len < fixed) fail(`truncated .vqd file: expected at least ${fixed} bytes, got ${len}`);
    shape = [];
    for (let i = 0; i < dims; i++) shape.push(view.getUint16(24 + 2 * i, true));
    at = 24 + 2 * dims;
  }
  const K = view.getUint16(at, true), n = view.getUint16(at + 2, true), count = view.getUint32(at + 4, true);
  if (extra) {
    length = Number(view.getBigUint64(at + 8, true));
    if (modality !== "text" && view.getUint32(at + 16, true) === 0) fail(`invalid .vqd header: ${modality} sample rate 0`);
    const chunk = shape[shape.length - 1];
    let low = count ? (count - 1) * chunk + 1 : 0, high = count * chunk;
    let unit = modality === "text" ? "characters" : "samples";
    if (modality === "speech") {  // blocks of `chunk` frames, a frame every 64 samples: 1 + length // 64 frames
      [low, high] = count ? [(count - 1) * chunk * 64, count * chunk * 64 - 1] : [0, -1];
      unit = "frames (64 samples each)";
    }
    if (length < low || length > high) {
      fail(`invalid .vqd header: ${modality} length ${length} does not fit ${count} chunks of ${chunk} ` +
        `${unit} (must be ${low}..${high})`);
    }
  }
  if (flags !== 0) fail(`unsupported .vqd flags 0x${flags.toString(16).padStart(2, "0")} (version ${version} requires 0)`);
  // rule 3
  if (K < 2) fail(`invalid .vqd header: K=${K} (must be 2..65535)`);
  if (n < 1) fail("invalid .vqd header: stage count 0 (must be at least 1)");
  if (shape.includes(0)) fail(`invalid .vqd header: ${modality} shape (${shape.join(", ")}) has a zero dimension`);
  // rule 4
  const header = version === 1 ? 36 : 32 + 2 * shape.length + extra;
  const bits = bitsPerItem(K, n);
  const payload = Math.ceil(count * bits / 8);
  const expected = header + payload + 4;
  if (len < expected) fail(`truncated .vqd file: expected ${expected} bytes, got ${len}`);
  if (len > expected) fail(`trailing garbage after .vqd data: expected ${expected} bytes, got ${len}`);
  // rule 5: the model's
  if (modality !== model.modality) {
    fail(`.vqd file holds ${modality} codes (${shape.join("x")}); this model is an ${model.modality} model`);
  }
  if (fp !== model.fingerprint) {
    const shown = fp.slice(0, 12) !== model.fingerprint.slice(0, 12) ? 12 : 32;
    fail(`.vqd file was made by a different model (file fingerprint ${fp.slice(0, shown)}, this model ${model.fingerprint.slice(0, shown)})`);
  }
  if (shape.join() !== model.data_shape.join()) {
    fail(`.vqd file holds images of shape (${shape.join(", ")}); this model makes (${model.data_shape.join(", ")})`);
  }
  if (K !== model.options) fail(`.vqd file has K=${K} options per stage; this model has K=${model.options}`);
  if (n > model.stages) fail(`.vqd file has ${n} stages per image; this model has only ${model.stages}`);
  // rule 6
  if ((K & (K - 1)) !== 0 && bits > MAX_MIXED_RADIX_BITS) {
    fail(`.vqd images of ${bits} bits with K=${K} (not a power of two) exceed the ${MAX_MIXED_RADIX_BITS}-bit limit of this reader`);
  }
  // rule 7
  const stored = view.getUint32(header + payload, true), actual = crc32(data.subarray(0, header + payload));
  if (stored !== actual) {
    fail(`corrupt .vqd file: checksum mismatch (stored ${stored.toString(16).padStart(8, "0")}, computed ${actual.toString(16).padStart(8, "0")})`);
  }
  // rule 8: each item one b-bit big-endian field, the mixed-radix number of its n codes
  const body = data.subarray(header, header + payload);
  const used = count * bits;
  if (used % 8 && (body[payload - 1] & ((1 << (8 - used % 8)) - 1))) fail("corrupt .vqd payload: non-zero padding bits");
  const bigK = BigInt(K), limit = bigK ** BigInt(n);
  const codes = [];
  for (let item = 0; item < count; item++) {
    const first = item * bits, last = first + bits - 1;  // bit positions, most significant first
    const lo = Math.floor(first / 8), hi = Math.floor(last / 8);
    let value = BigInt("0x" + hex(body.subarray(lo, hi + 1)));
    value = (value >> BigInt(7 - (last % 8))) & ((1n << BigInt(bits)) - 1n);
    if (value >= limit) fail(`corrupt .vqd payload: image ${item} decodes to codes outside [0, ${K})`);
    const code = new Array(n);
    for (let i = n - 1; i >= 0; i--) { code[i] = Number(value % bigK); value /= bigK; }
    codes.push(code);
  }
  return { version, modality, fingerprint: fp, shape, K, stages: n, count, length, codes, bytes: len };
}

// for tests and the console: idle() resolves when the actions started so far are done
window.vqdrawPage = { readVqd, hexOf, VqdFormatError, idle: () => busy };

if (document.getElementById("about")) {
  main().catch((err) => {
    $("about").textContent = `Could not start: ${err.message || err}. Serve this folder over HTTP ` +
      "(python -m http.server), not as a file:// page.";
    $("about").className = "error";
  });
}
