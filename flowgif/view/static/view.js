// flowgif view's controls: the page's state, its inputs, the animation loop, saves and runs.
// Drawing is draw.js, every request api.js, the drawing pad pad.js, training train.js.
import { decode, fetchBody, fetchJSON, listRuns } from "./api.js";
import { draw, prepare, size, timeAt, viewAt } from "./draw.js";
import { makePad } from "./pad.js";
import { makeTraining } from "./train.js";

const $ = (id) => document.getElementById(id);
const state = { s: 0, t: 0, playing: true, speed: 1, fps: 0, ready: false, frames: 0, error: "" };
window.flowgifView = state;
const flows = { exact: null, run: null };
state.flows = flows; // for tests and the console: what is on screen
const FPS = 25; // flowgif render's --fps: a pass lasts frames / FPS seconds at speed 1
const HOLD = 1.0; // render's --hold: seconds on the picture (half on the noise)
let pending = null; // the AbortController of the flow being computed
const names = {}; // what the page calls each picture it sent (its caption), by the server's id

// what the controls say, as draw.js takes it
function settings() {
  return {
    pace: $("pace").value, background: $("background").value, color: $("color").value,
    trail: parseInt($("trail").value) || 0, particles: parseInt($("particles").value) || 20000,
    density: $("show-density").checked, field: $("show-field").checked, fps: state.fps,
  };
}

let last = performance.now(), held = 0, counted = 0, since = performance.now();
function frame(now) {
  requestAnimationFrame(frame); // the next frame comes even if this one fails
  try { step(now); } catch (e) { say(`error: ${e.message}`); throw e; }
}

function step(now) {
  const dt = Math.min(0.1, (now - last) / 1000);
  last = now;
  const lead = flows.exact || flows.run;
  if (lead) {
    if (state.playing) {
      if (state.s >= 1) {
        held += dt;
        if (held > HOLD) { state.s = 0; held = -HOLD / 2; }
      } else if (held < 0) held += dt; // half the hold on the noise
      else state.s = Math.min(1, state.s + (dt * state.speed * FPS) / lead.frames);
      $("scrub").value = Math.round(state.s * 1000);
    }
    const o = settings();
    state.t = timeAt(lead, state.s, o.pace);
    state.view = viewAt(lead, state.s, o.pace); // what the canvas shows: half extents, model units
    state.half = lead.half;
    $("time").textContent = `t = ${state.t.toFixed(2)}`;
    if (flows.exact) draw($("exact"), flows.exact, state.s, o);
    if (flows.run) draw($("run"), flows.run, state.s, o);
    state.drawn = state.s; // the play position of the frame on screen
    state.frames++;
    counted++;
  }
  if (now - since >= 1000) {
    state.fps = (counted * 1000) / (now - since);
    $("fps").textContent = lead ? `${state.fps.toFixed(0)} fps` : "";
    counted = 0; since = now;
  }
}
requestAnimationFrame(frame);

function say(text) { $("status").textContent = text; state.error = text; }

// the progress bar of the request under way
function progress(done) {
  const bar = $("progress");
  bar.hidden = done === null;
  if (done !== null && done >= 0) bar.value = done; else bar.removeAttribute("value");
}

async function fetchFlow(url, options, signal) {
  const flow = decode(await fetchBody(url, options, signal, progress));
  flow.header_inside = flow.inside;
  flow.heat_stops = flow.heat;
  flow.source = url;
  return prepare(flow);
}

function begin() {
  if (pending) pending.abort();
  pending = new AbortController();
  state.ready = false;
  return pending.signal;
}

async function show(url, options, caption) {
  const signal = begin();
  training.leave();
  say(url.startsWith("/api/morph") ? "solving the optimal-transport map ..." : "computing the exact flow ...");
  try {
    const flow = await fetchFlow(url, options, signal);
    flows.exact = flow;
    flows.run = null;
    state.chain = flow.ids || null; // a morph: its pictures, in order
    $("run-figure").hidden = true;
    size($("exact"), flow);
    if (flow.id) names[flow.id] = caption;
    if (state.chain) names[state.chain.at(-1)] = caption;
    $("exact-caption").textContent = state.chain
      ? `the optimal-transport morph ${state.chain.map((i) => names[i] || "a picture").join(" → ")} (flowgif morph)`
      : `the exact flow of ${caption}`;
    start();
    say("");
    loadInside();
  } catch (e) { if (e.name !== "AbortError") say(`error: ${e.message}`); }
}

function start() { state.s = 0; held = 0; state.ready = true; }

// how the ink is read (the CLI's --ink and --invert); a change flows the last picture again
const ink = () => `ink=${encodeURIComponent($("ink").value)}${$("invert").checked ? "&invert=1" : ""}`;
let sent = null;  // what was last sent: a picture (blob) or a word
function send(blob, caption) {
  sent = { blob, caption };
  show(`/api/flow?${ink()}`, { method: "POST", body: blob }, caption);
}
function sendWord() {
  const w = $("text").value.trim();
  if (!w) return;
  sent = { word: w };
  show(`/api/flow?text=${encodeURIComponent(w)}&${ink()}`, { method: "POST" }, `"${w}"`);
}

$("file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) send(f, f.name); });
// a morph: the picture (or morph) on screen flows into the next one
function morphInto(blob, caption) {
  const ids = state.chain || (flows.exact?.id ? [flows.exact.id] : null);
  if (!ids) { say("show a picture first: the morph starts from it"); return; }
  sent = null;
  show(`/api/morph?ids=${ids.join(",")}&${ink()}`, { method: "POST", body: blob }, caption);
}
$("morph-file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) morphInto(f, f.name); });
$("word").addEventListener("submit", (e) => { e.preventDefault(); sendWord(); });
document.addEventListener("paste", (e) => {
  if (document.activeElement === $("text")) return;
  for (const item of e.clipboardData.items) {
    if (item.type.startsWith("image/")) { send(item.getAsFile(), "the pasted picture"); return; }
  }
  const text = e.clipboardData.getData("text").trim();
  if (text) { $("text").value = text.slice(0, 64); sendWord(); }
});
document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  const f = e.dataTransfer.files[0];
  if (f) send(f, f.name);
});
for (const id of ["ink", "invert"]) {
  $(id).addEventListener("change", () => {
    if (sent?.word) { $("text").value = sent.word; sendWord(); }
    else if (sent) send(sent.blob, sent.caption);
  });
}

// drawing: black strokes on a white pad, sent as a PNG
const pad = makePad($("pad"), (blob) => send(blob, "the drawing"), (blob) => morphInto(blob, "the drawing"));
$("pad-morph").addEventListener("click", pad.morph);
$("pad-clear").addEventListener("click", pad.clear);
$("pad-flow").addEventListener("click", pad.flow);

$("play").addEventListener("click", () => {
  state.playing = !state.playing;
  $("play").textContent = state.playing ? "pause" : "play";
});
$("scrub").addEventListener("input", (e) => { state.s = e.target.value / 1000; held = 0; });
$("speed").addEventListener("change", (e) => { state.speed = parseFloat(e.target.value); });
// what a panel shows at the frame on screen: half extents in model units (tests, benches)
state.viewOf = (key) => viewAt(flows[key], state.drawn ?? state.s, $("pace").value);
state.seek = (s) => { state.s = s; held = 0; $("scrub").value = Math.round(s * 1000); };
state.pause = () => { state.playing = false; $("play").textContent = "play"; };

// what is inside: p_t and v on a grid per time, fetched once a toggle asks for them
async function loadInside() {
  if (!$("show-density").checked && !$("show-field").checked) return;
  for (const key of ["exact", "run"]) {
    const flow = flows[key];
    if (!flow || flow.inside || flow.insideLoading) continue;
    flow.insideLoading = true;
    const url = flow.id ? `/api/inside?id=${flow.id}` : flow.insideUrl;
    if (!url) continue;
    try {
      const inside = decode(await fetchBody(url, {}, undefined, progress));
      flow.inside = {
        density: inside.density, densityGrid: inside.blocks.density.shape[1],
        field: inside.field, fieldGrid: inside.blocks.field.shape[1], box: inside.box,
      };
      state.insideReady = true;
    } catch (e) { say(`error: ${e.message}`); }
    flow.insideLoading = false;
  }
}
$("show-density").addEventListener("change", loadInside);
$("show-field").addEventListener("change", loadInside);

async function keep(format) {
  const flow = flows.run || flows.exact;
  if (!flow || (!flow.id && !flow.run)) { say("drop a picture first"); return; }
  say(`rendering the ${format.toUpperCase()} with flowgif render ...`);
  const q = new URLSearchParams({
    format, particles: $("particles").value, color: $("color").value,
    background: $("background").value, trail: $("trail").value, pace: $("pace").value,
  });
  if (flow.run) q.set("run", flow.run); else q.set("id", flow.id);
  try {
    const answer = await fetchJSON(`/api/save?${q}`, { method: "POST" }, undefined, progress);
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

function figures(run) {
  const e = run.eval || {};
  return ["kl", "tv", "on_ink"].filter((k) => typeof e[k] === "number").map((k) => `${k} ${e[k].toFixed(3)}`).join(", ");
}

async function playRun(run) {
  const signal = begin();
  training.leave();
  const name = encodeURIComponent(run.name);
  say(`solving ${run.name} and the exact flow of its picture ...`);
  try {
    const exact = await fetchFlow(`/api/runs/${name}/exact`, {}, signal);
    const mine = await fetchFlow(`/api/runs/${name}/flow`, {}, signal);
    exact.insideUrl = `/api/runs/${name}/inside?of=exact`;
    mine.insideUrl = `/api/runs/${name}/inside?of=run`;
    mine.run = run.name;
    flows.exact = exact; flows.run = mine;
    size($("exact"), exact); size($("run"), mine);
    $("run-figure").hidden = false;
    $("exact-caption").textContent = `the exact flow of ${run.name}'s picture, from the same noise`;
    const f = figures(run);
    $("run-caption").textContent = `${run.name} (${mine.method})${f ? `: ${f}` : ""}`;
    start();
    say("");
    loadInside();
    if (run.training) training.watch(run.name, () => flows.exact);
  } catch (e) { if (e.name !== "AbortError") say(`error: ${e.message}`); }
}

// training (train.js): the network's flow replaces the right-hand panel as it learns
const training = makeTraining({
  say,
  // what Train trains: the picture on screen, or the morph of two pictures on screen
  picture: () => (state.chain ? { id: state.chain.at(-1), from: state.chain.at(-2), legs: state.chain.length - 1 } : flows.exact?.id ? { id: flows.exact.id } : null),
  exact: () => flows.exact,
  refreshRuns: () => showRuns(),
  async showRun(name, signal) { // a training that ended: its checkpoint's flow, every path
    try {
      const mine = await fetchFlow(`/api/runs/${encodeURIComponent(name)}/flow`, {}, signal);
      if (signal.aborted) return;
      mine.run = name;
      mine.insideUrl = `/api/runs/${encodeURIComponent(name)}/inside?of=run`;
      flows.run = mine;
      size($("run"), mine);
      $("run-caption").textContent = `${name} (${mine.method}), as trained`;
      state.trained = name;
    } catch (e) { if (e.name !== "AbortError") say(`error: ${e.message}`); }
  },
  showLive(flow, caption) {
    flows.run = flow;
    size($("run"), flow);
    $("run-figure").hidden = false;
    $("run-caption").textContent = caption;
  },
});
state.train = training;

async function showRuns() {
  let runs;
  try { runs = await listRuns(); } catch (e) { say(`error: ${e.message}`); return; }
  const ul = $("run-list");
  ul.replaceChildren();
  for (const run of runs) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    const img = document.createElement("img");
    img.src = `/api/runs/${encodeURIComponent(run.name)}/thumb`;
    img.alt = "";
    const title = document.createElement("span");
    title.textContent = run.name;
    const small = document.createElement("small");
    small.textContent = run.training ? "training" : figures(run);
    b.append(img, title, small);
    b.addEventListener("click", () => playRun(run));
    li.append(b);
    if (!run.training && !run.computed) { // go on training it: flowgif train --resume
      const more = document.createElement("button");
      more.type = "button";
      more.className = "resume";
      more.textContent = "continue training";
      more.title = "flowgif train --resume with the budget above (counted from the run's start)";
      more.addEventListener("click", async () => { await playRun(run); training.train(run.name); });
      li.append(more);
    }
    ul.append(li);
  }
  if (!runs.length) ul.textContent = "no runs in this folder yet";
}
showRuns();
