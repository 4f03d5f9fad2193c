// The page of `vqdraw export --web`: the exported graphs run by onnxruntime-web (WebAssembly).
// encoder.onnx: data (1, C, H, W) float32 in [0, 1] -> codes (1, N) int64 (greedy)
// decoder.onnx: codes (1, N) int64 -> data (1, C, H, W) float32 in [0, 1]
"use strict";

ort.env.wasm.numThreads = 1;  // threads need a cross-origin-isolated page; one is enough here
ort.env.wasm.wasmPaths = "./";

const $ = (id) => document.getElementById(id);
let meta, encoder, decoder, codes;

async function main() {
  meta = await (await fetch("model.json")).json();
  [encoder, decoder] = await Promise.all([
    ort.InferenceSession.create(meta.encoder.file), ort.InferenceSession.create(meta.decoder.file)]);
  const [c, h, w] = meta.data_shape;
  const bits = (meta.stages * Math.log2(meta.options)).toFixed(0);
  $("about").textContent = `A ${w}x${h} ${c === 1 ? "grey" : "colour"} image as ${meta.stages} choices ` +
    `of ${meta.options} options (${bits} bits). Model ${meta.fingerprint}.`;
  const scale = Math.max(1, Math.floor(280 / Math.max(h, w)));
  for (const id of ["draw", "output"]) { $(id).width = w * scale; $(id).height = h * scale; }
  buildCode();
  setupDrawing();
  $("sample").onclick = () => decode(codes.map(() => Math.floor(Math.random() * meta.options)));
  $("reencode").onclick = encode;
  clearDrawing();
  await encode();
}

function buildCode() {
  const box = $("code");
  for (let i = 0; i < meta.stages; i++) {
    const label = document.createElement("label");
    const select = document.createElement("select");
    for (let k = 0; k < meta.options; k++) select.add(new Option(String(k), String(k)));
    select.onchange = () => { const next = codes.slice(); next[i] = Number(select.value); decode(next); };
    label.append(select, document.createElement("br"), `stage ${i + 1}`);
    box.append(label);
  }
  codes = new Array(meta.stages).fill(0);
}

function showCode() {
  $("code").querySelectorAll("select").forEach((s, i) => { s.value = String(codes[i]); });
}

async function decode(next) {
  codes = next;
  showCode();
  const t0 = performance.now();
  const input = new ort.Tensor("int64", BigInt64Array.from(codes.map(BigInt)), [1, meta.stages]);
  const out = (await decoder.run({ [meta.decoder.input.name]: input }))[meta.decoder.output.name];
  paint($("output"), out.data);
  $("status").textContent = `decoded in ${(performance.now() - t0).toFixed(0)} ms; code [${codes.join(", ")}]`;
}

async function encode() {
  const t0 = performance.now();
  const input = new ort.Tensor("float32", readDrawing(), [1, ...meta.data_shape]);
  const out = (await encoder.run({ [meta.encoder.input.name]: input }))[meta.encoder.output.name];
  const took = performance.now() - t0;
  await decode(Array.from(out.data, Number));
  $("status").textContent += `; encoded in ${took.toFixed(0)} ms`;
}

// data (C, H, W) in [0, 1] -> the canvas, each pixel a scale x scale block
function paint(canvas, data) {
  const [c, h, w] = meta.data_shape;
  const small = new ImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    for (let ch = 0; ch < 3; ch++) small.data[4 * p + ch] = 255 * data[(c === 1 ? 0 : ch) * h * w + p];
    small.data[4 * p + 3] = 255;
  }
  const tmp = document.createElement("canvas");
  tmp.width = w; tmp.height = h;
  tmp.getContext("2d").putImageData(small, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

// the drawing, reduced to the model's size: (C, H, W) float32 in [0, 1]
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
    for (let ch = 0; ch < c; ch++) {
      out[ch * h * w + p] = c === 1 ? (rgba[4 * p] + rgba[4 * p + 1] + rgba[4 * p + 2]) / 765 : rgba[4 * p + ch] / 255;
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
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  canvas.onpointerdown = (e) => { last = at(e); canvas.setPointerCapture(e.pointerId); stroke(at(e)); };
  canvas.onpointermove = (e) => { if (last) stroke(at(e)); };
  canvas.onpointerup = () => { last = null; encode(); };
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
  $("clear").onclick = () => { clearDrawing(); encode(); };
}

main().catch((err) => { $("about").textContent = `Could not start: ${err}. Serve this folder over HTTP ` +
  "(python -m http.server), not as a file:// page."; });
