// flowgif view's training: Train starts `flowgif train ... --live` on the picture on screen
// (or continues a run of the folder), and the network's flow plays beside the exact flow,
// replaced each time the network has new weights, with the training's figures beside it.
// The page asks /api/train/NAME/next in a loop: the server answers when there is something
// new (new weights or a new state), at the latest every 10 s.
import { decode } from "./api.js";
import { prepare } from "./draw.js";

const $ = (id) => document.getElementById(id);
// what the live flow takes from the exact flow it plays beside: the same frames, camera and
// pacing, so that both panels move in step
const SHARED = ["frames", "half", "size", "view", "pace", "hues", "ink", "ground", "heat_stops"];
const ENDED = ["done", "stopped", "failed", "killed", "cancelled"];

export function makeTraining(page) {
  // page: { flows, say, showLive(flow, caption), showRun(name), refreshRuns(), picture() }
  const live = { name: null, state: "", updates: 0, firstAt: null, trainedAt: null, startedAt: null, figures: {} };
  window.flowgifView.training = live; // for tests and the console
  let watching = null; // the AbortController of the watch under way

  const fmt = (v, d = 3) => (typeof v === "number" ? v.toFixed(d) : "…");
  let before = null; // the figures of the update before: steps per second between the two
  function show(status, figures) {
    const f = figures || {};
    let rate = live.rate ?? null;
    if (before && f.step > before.step && f.seconds > before.seconds) {
      rate = (f.step - before.step) / (f.seconds - before.seconds);
      live.rate = rate;
    }
    if (f.step !== undefined) before = f;
    const parts = [status.state + (status.queued ? ` (${status.queued} ahead)` : "")];
    if (f.step !== undefined) {
      parts.push(`step ${f.step}`, `${fmt(rate, 0)} steps/s`, `${fmt(f.seconds, 0)} s`);
      if (f.loss !== null && f.loss !== undefined) parts.push(`loss ${fmt(f.loss, 4)}`);
      parts.push(`field error ${fmt(f.field)}`, `tv ${fmt(f.tv)} (${f.reference || "the exact flow"} ${fmt(f.tv_exact)})`);
    }
    if (status.line) parts.push(status.line);
    $("train-figures").textContent = parts.join(" · ");
    $("train-figures").title =
      "field error: mean |v − v*|² / mean |v*|² at 1,000 points of the exact flow (a morph: the " +
      "optimal-transport map it is taught by) at t = 0.1 … 0.9; tv: where the 2,000 particles of " +
      "the latest update land " +
      "against the picture, on 32 cells along its longer side (that flow's own tv on the same " +
      "particles is the floor of the estimate)";
    const running = ["starting", "training", "paused", "queued", "stopping"].includes(status.state);
    $("train-pause").hidden = !running || !status.command;
    $("train-stop").hidden = !running || !status.command;
    $("train-pause").textContent = status.state === "paused" ? "Continue" : "Pause";
    $("train").disabled = running;
  }

  // the page keeps the latest paths of every block of the network's particles (each update
  // solves one block, the next each time): a path not solved yet is not drawn
  let kept = null;
  function flowOf(header, exact) {
    const T = header.times, n = header.total, b = header.particles, at = header.offset;
    if (!kept || kept.n !== n || kept.T !== T || kept.scale !== header.scale) {
      kept = { n, T, scale: header.scale, paths: new Int16Array(T * n * 2).fill(-32768), rgb: new Uint8Array(n * 3) };
    }
    for (let t = 0; t < T; t++) kept.paths.set(header.paths.subarray(t * b * 2, (t + 1) * b * 2), (t * n + at) * 2);
    kept.rgb.set(header.rgb, at * 3);
    const flow = { times: T, particles: n, scale: header.scale, paths: kept.paths, rgb: kept.rgb, figures: header.figures };
    for (const k of SHARED) flow[k] = exact[k];
    flow.heat = exact.heat_stops;
    flow.run = live.name;
    flow.method = "training";
    flow.insideUrl = null; // p_t and v of a network in training: not fetched
    prepare(flow);
    // the spacing of the paths (which sets their copies' spread) is found again once all
    // the blocks have been replaced: per update it would cost more than a frame
    kept.filled = (kept.filled || new Set()).add(at);
    const full = kept.filled.size * b >= n;
    if (kept.last?.near && full && kept.fresh > 0) {
      flow.near = kept.last.near;
      flow.step = kept.last.step;
      kept.fresh--;
    } else kept.fresh = full ? n / b - 1 : 0;
    kept.last = flow;
    return flow;
  }

  async function watch(name, exact) {
    if (watching) watching.abort();
    const ctl = new AbortController();
    watching = ctl;
    Object.assign(live, { name, state: "", updates: 0, figures: {}, rate: null });
    before = null;
    kept = null;
    let after = "", state = "";
    while (!ctl.signal.aborted) {
      let header;
      try {
        const url = `/api/train/${encodeURIComponent(name)}/next?after=${encodeURIComponent(after)}&state=${state}`;
        const res = await fetch(url, { signal: ctl.signal });
        if (!res.ok) {
          let reason = `${res.status}`;
          try { reason = (await res.json()).error; } catch (e) { /* not JSON */ }
          throw new Error(reason);
        }
        header = decode(await res.arrayBuffer());
      } catch (e) {
        if (e.name === "AbortError") return;
        page.say(`error: ${e.message}`);
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      after = header.stamp || after;
      state = header.status.state;
      live.state = state;
      live.figures = header.figures || {};
      live.status = header.status;
      show(header.status, header.figures);
      if (header.paths && exact()) {
        const began = performance.now();
        const flow = flowOf(header, exact());
        live.prepareMs = performance.now() - began; // what an update costs the page
        live.updates++;
        if (live.firstAt === null) live.firstAt = performance.now(); // the network, step 0 on
        if (live.trainedAt === null && header.figures.step >= 1) live.trainedAt = performance.now();
        page.showLive(flow, `${name}, training: step ${header.figures.step}`);
      }
      if (ENDED.includes(state)) {
        if (watching === ctl) watching = null;
        page.refreshRuns();
        // what it learned, as a run of the folder plays: all the page's paths
        if (["done", "stopped"].includes(state)) page.showRun(name, ctl.signal);
        return;
      }
    }
  }

  async function post(url) {
    const res = await fetch(url, { method: "POST" });
    let answer = {};
    try { answer = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) throw new Error(answer.error || `${res.status}`);
    return answer;
  }

  async function train(run) {
    const q = new URLSearchParams({ method: $("method").value, keep: $("keep-training").checked ? "1" : "0" });
    q.set($("budget-unit").value, $("budget").value);
    const picture = page.picture();
    if (run) q.set("run", run);
    else if (picture?.legs > 1) {
      page.say("Train trains a morph of two pictures; a longer one: flowgif morph A B C --method fm");
      return;
    } else if (picture) {
      q.set("id", picture.id);
      if (picture.from) q.set("from", picture.from);
    } else { page.say("drop a picture first"); return; }
    Object.assign(live, { startedAt: performance.now(), firstAt: null, trainedAt: null, updates: 0 });
    window.flowgifView.trained = null; // set again when this training's flow is shown whole
    try {
      const answer = await post(`/api/train?${q}`);
      $("train-command").textContent = answer.command;
      live.command = answer.command;
      show(answer, null);
      page.say("");
      watch(answer.name, page.exact);
    } catch (e) { page.say(`error: ${e.message}`); }
  }

  async function act(what) {
    if (!live.name) return;
    try { show(await post(`/api/train/${encodeURIComponent(live.name)}/${what}`), live.figures); }
    catch (e) { page.say(`error: ${e.message}`); }
  }

  $("method").addEventListener("change", () => { $("method-flag").textContent = `--method ${$("method").value}`; });
  $("train").addEventListener("click", () => train(null));
  $("train-pause").addEventListener("click", () => act(live.state === "paused" ? "continue" : "pause"));
  $("train-stop").addEventListener("click", () => act("stop"));

  return {
    train, watch,
    // another picture or run on screen: stop watching (the training itself goes on, or stops
    // when no page watches it, as it was asked)
    leave() { if (watching) watching.abort(); watching = null; live.name = null; $("train").disabled = false; },
  };
}
