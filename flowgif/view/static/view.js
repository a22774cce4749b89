// flowgif view: particles advanced in the page from the paths the server sends once.
const $ = (id) => document.getElementById(id);
const state = { t: 0, playing: true, speed: 1, fps: 0, ready: false, frames: 0, error: "" };
window.flowgifView = state;
const flows = { exact: null, run: null };
const DURATION = 4.0; // seconds of one pass at speed 1
const HOLD = 0.8; // seconds on the picture before the next pass

function decode(buffer) {
  const view = new DataView(buffer);
  const len = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, len)));
  const data = new Int16Array(buffer, 4 + len, header.times * header.particles * 2);
  return { ...header, data };
}

function prepare(flow) {
  // start radius for the camera, and colours by where each particle starts
  const n = flow.particles, d = flow.data, s = flow.scale / 32767;
  const r = [];
  flow.colors = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const x = d[2 * i] * s, y = d[2 * i + 1] * s;
    if (i % 16 === 0) r.push(Math.max(Math.abs(x), Math.abs(y)));
    const hue = (Math.atan2(y, x) / (2 * Math.PI) + 1) % 1;
    flow.colors[i] = rgba(hsl(hue, 0.75, 0.5));
  }
  r.sort((a, b) => a - b);
  flow.start = Math.max(r[Math.floor(0.98 * (r.length - 1))] || 1, Math.max(...flow.half));
  return flow;
}

function hsl(h, s, l) {
  const f = (n) => { const k = (n + h * 12) % 12; return l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1)); };
  return [f(0), f(8), f(4)].map((v) => Math.round(v * 255));
}
const rgba = ([r, g, b]) => (255 << 24) | (b << 16) | (g << 8) | r;

function draw(canvas, flow, t) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  if (!canvas.image || canvas.image.width !== W) canvas.image = ctx.createImageData(W, H);
  const img = canvas.image, px = new Uint32Array(img.data.buffer);
  const dark = $("background").value === "dark";
  const bg = dark ? rgba([17, 17, 17]) : rgba([255, 255, 255]);
  if ($("trail").checked) {
    const a = img.data;
    const target = dark ? 17 : 255;
    for (let i = 0; i < a.length; i += 4) {
      a[i] += (target - a[i]) * 0.25; a[i + 1] += (target - a[i + 1]) * 0.25; a[i + 2] += (target - a[i + 2]) * 0.25;
    }
  } else px.fill(bg);
  const n = flow.particles, T = flow.times, d = flow.data, s = flow.scale / 32767;
  const u = Math.min(1, Math.max(0, t)) * (T - 1);
  const k = Math.min(T - 2, Math.floor(u)), w = u - k;
  const a0 = k * n * 2, a1 = (k + 1) * n * 2;
  const e = t * t * (3 - 2 * t); // the camera: from the start's extent to the picture's
  const extX = flow.start * 1.05 * (1 - e) + flow.half[0] * 1.05 * e;
  const extY = flow.start * 1.05 * (1 - e) + flow.half[1] * 1.05 * e;
  const sc = Math.min(W / (2 * extX), H / (2 * extY)), cx = W / 2, cy = H / 2;
  const mono = $("color").value === "mono" ? (dark ? rgba([235, 235, 235]) : rgba([20, 20, 20])) : 0;
  const shown = Math.max(1, Math.min(200000, parseInt($("particles").value) || 20000));
  for (let i = 0; i < shown; i++) {
    const p = i % n, copy = (i / n) | 0;
    const j = 2 * p;
    let x = (d[a0 + j] + (d[a1 + j] - d[a0 + j]) * w) * s;
    let y = (d[a0 + j + 1] + (d[a1 + j + 1] - d[a0 + j + 1]) * w) * s;
    let X = cx + x * sc, Y = cy - y * sc;
    if (copy) { X += ((copy * 0.618) % 1) - 0.5; Y += ((copy * 0.382 + 0.5) % 1) - 0.5; }
    const xi = X | 0, yi = Y | 0;
    if (xi >= 0 && yi >= 0 && xi < W && yi < H) px[yi * W + xi] = mono || flow.colors[p];
  }
  ctx.putImageData(img, 0, 0);
}

function size(canvas, flow) {
  const w = Math.min(480, document.body.clientWidth - 24);
  canvas.width = Math.max(160, Math.round(w));
  canvas.height = Math.round(canvas.width * Math.min(1.5, flow.half[1] / flow.half[0]));
}

let last = performance.now(), held = 0, counted = 0, since = performance.now();
function frame(now) {
  const dt = Math.min(0.1, (now - last) / 1000);
  last = now;
  if (flows.exact) {
    if (state.playing) {
      if (state.t >= 1) {
        held += dt;
        if (held > HOLD) { state.t = 0; held = 0; }
      } else state.t = Math.min(1, state.t + (dt * state.speed) / DURATION);
      $("scrub").value = Math.round(state.t * 1000);
    }
    draw($("exact"), flows.exact, state.t);
    if (flows.run) draw($("run"), flows.run, state.t);
    state.frames++;
    counted++;
  }
  if (now - since >= 1000) {
    state.fps = (counted * 1000) / (now - since);
    $("fps").textContent = flows.exact ? `${state.fps.toFixed(0)} fps` : "";
    counted = 0; since = now;
  }
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);

function say(text) { $("status").textContent = text; state.error = text; }

async function fetchFlow(url, options) {
  const res = await fetch(url, options);
  if (!res.ok) {
    let reason = `${res.status}`;
    try { reason = (await res.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(reason);
  }
  return prepare(decode(await res.arrayBuffer()));
}

async function show(promise, caption) {
  say("computing the exact flow ...");
  state.ready = false;
  try {
    const flow = await promise;
    flows.exact = flow;
    flows.run = null;
    $("run-figure").hidden = true;
    size($("exact"), flow);
    $("exact-caption").textContent = `the exact flow of ${caption}`;
    state.t = 0; state.ready = true;
    say("");
  } catch (e) { say(`error: ${e.message}`); }
}

function send(blob, caption) {
  show(fetchFlow("/api/flow", { method: "POST", body: blob }), caption);
}

$("file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) send(f, f.name); });
$("word").addEventListener("submit", (e) => {
  e.preventDefault();
  const w = $("text").value.trim();
  if (w) show(fetchFlow(`/api/flow?text=${encodeURIComponent(w)}`, { method: "POST" }), `"${w}"`);
});
document.addEventListener("paste", (e) => {
  for (const item of e.clipboardData.items) {
    if (item.type.startsWith("image/")) { send(item.getAsFile(), "the pasted picture"); return; }
  }
});
document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  const f = e.dataTransfer.files[0];
  if (f) send(f, f.name);
});
$("play").addEventListener("click", () => {
  state.playing = !state.playing;
  $("play").textContent = state.playing ? "pause" : "play";
});
$("scrub").addEventListener("input", (e) => { state.t = e.target.value / 1000; });
$("speed").addEventListener("change", (e) => { state.speed = parseFloat(e.target.value); });
state.seek = (t) => { state.t = t; $("scrub").value = Math.round(t * 1000); };
state.pause = () => { state.playing = false; $("play").textContent = "play"; };

async function keep(format) {
  if (!flows.exact || !flows.exact.id) { say("drop a picture first"); return; }
  say(`rendering the ${format.toUpperCase()} with flowgif render ...`);
  const q = new URLSearchParams({
    id: flows.exact.id, format,
    particles: $("particles").value, color: $("color").value,
    background: $("background").value, trail: $("trail").checked ? 8 : 0,
  });
  try {
    const res = await fetch(`/api/save?${q}`, { method: "POST" });
    const answer = await res.json();
    if (!res.ok) throw new Error(answer.error);
    const a = $("saved");
    a.href = `/api/files/${encodeURIComponent(answer.file)}`;
    a.download = answer.file;
    a.textContent = `download ${answer.file}`;
    a.hidden = false;
    $("command").textContent = answer.command;
    state.saved = answer;
    say("");
  } catch (e) { say(`error: ${e.message}`); }
}
$("save-gif").addEventListener("click", () => keep("gif"));
$("save-mp4").addEventListener("click", () => keep("mp4"));

async function listRuns() {
  const res = await fetch("/api/runs");
  const { runs } = await res.json();
  const ul = $("run-list");
  ul.replaceChildren();
  for (const run of runs) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    const figures = run.eval ? ` (tv ${run.eval.tv?.toFixed(3)})` : "";
    b.textContent = run.name + figures;
    b.addEventListener("click", async () => {
      say(`solving ${run.name} ...`);
      try {
        const flow = await fetchFlow(`/api/runs/${encodeURIComponent(run.name)}/flow`);
        flows.run = flow;
        size($("run"), flow);
        $("run-figure").hidden = false;
        $("run-caption").textContent = run.name + figures;
        if (!flows.exact) { flows.exact = flow; size($("exact"), flow); $("exact-caption").textContent = run.name; }
        state.t = 0; state.ready = true;
        say("");
      } catch (e) { say(`error: ${e.message}`); }
    });
    li.append(b);
    ul.append(li);
  }
  if (!runs.length) ul.textContent = "no runs in this folder yet";
}
listRuns();
