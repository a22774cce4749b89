// flowgif view's drawing: particles as the renderer draws them (2 x 2 squares on a 480-px
// canvas, 1, 2 or 3+ on a pixel blending 62/84/100 % of their colour into the ground), the
// renderer's pacing and camera, and what is inside a flow (p_t as a tint, v as arrows).
// Nothing here reads the page's controls: what they say comes in as an argument.
const OUT = -32768; // a position the server could not send (too far out): not drawn
const FPS = 25; // flowgif render's --fps: a trail lasts that many GIF frames a second

export const rgba = ([r, g, b]) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
// the renderer's blend of 1, 2 and 3+ particles on a pixel (flowgif/draw.py: a level of
// log(1 + count) / log(1 + 3), a lone dot's alpha 0.25 at the lowest level)
const SATURATE = Math.log1p(3);
const ALPHA = [1, 2, 3].map((c) => 0.25 + 0.75 * Math.min(1, Math.log1p(c) / SATURATE));

export function prepare(flow) {
  // colours of each particle for every --color and --background, made once: each at the
  // renderer's three levels of overlap
  const n = flow.particles, d = flow.paths;
  const K = flow.hues.light.length;
  const bucket = new Uint8Array(n); // --color position: the renderer's hue by starting angle
  for (let i = 0; i < n; i++) {
    const a = (Math.atan2(d[2 * i + 1], d[2 * i]) / (2 * Math.PI) + 1) % 1;
    bucket[i] = Math.min(K - 1, Math.floor(a * K));
  }
  flow.levelsOf = {};
  for (const bg of ["light", "dark"]) {
    // the renderer's levels: 1, 2, 3 or more particles on a pixel blend that much of their
    // colour into the ground (a lone dot a quarter and more, three the pure colour)
    const ground = flow.ground[bg];
    const blend = (c, k) => {
      let out = 255 << 24;
      for (let j = 0; j < 3; j++) {
        const g = ground[j], v = (c >>> (8 * j)) & 255;
        out |= Math.round(g + (v - g) * ALPHA[k]) << (8 * j);
      }
      return out >>> 0;
    };
    const hues = flow.hues[bg].map(rgba), ink = rgba(flow.ink[bg]);
    const levels = { position: [], image: [], mono: [] };
    for (let k = 0; k < 3; k++) {
      const hue = hues.map((c) => blend(c, k));
      const position = new Uint32Array(n), image = new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        position[i] = hue[bucket[i]];
        image[i] = blend(rgba([flow.rgb[3 * i], flow.rgb[3 * i + 1], flow.rgb[3 * i + 2]]), k);
      }
      levels.position.push(position);
      levels.image.push(image);
      levels.mono.push(new Uint32Array(n).fill(blend(ink, k)));
    }
    levels.target = levels.image;
    flow.levelsOf[bg] = levels;
  }
  flow.heat = {};
  for (const bg of ["light", "dark"]) { // the renderer's density ramp: dense = dark on light
    const ramp = new Uint32Array(256);
    for (let k = 0; k < 256; k++) {
      let s = 0.15 + 0.85 * (k / 255);
      if (bg === "light") s = 1.15 - s;
      ramp[k] = rgba(interpStops(flow.heat_stops || flow["heat"], s));
    }
    flow.heat[bg] = ramp;
  }
  flow.inside = null;
  return flow;
}

// each path's distance to its nearest neighbour (model units) at 11 times from 0 to 1, found
// through a grid of cells about two paths each; made once per flow, when copies are first drawn
function spread(flow) {
  if (flow.near) return flow.near;
  const n = flow.particles, T = flow.times, d = flow.paths, unit = flow.scale / 32767;
  const near = [];
  for (let si = 0; si < 11; si++) {
    const base = Math.round((si * (T - 1)) / 10) * n * 2;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let p = 0; p < n; p++) {
      const x = d[base + 2 * p], y = d[base + 2 * p + 1];
      if (x === OUT) continue;
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    const h = Math.max(1, Math.sqrt(((x1 - x0 + 1) * (y1 - y0 + 1) * 2) / n));
    const gx = Math.min(2048, Math.ceil((x1 - x0 + 1) / h)), gy = Math.min(2048, Math.ceil((y1 - y0 + 1) / h));
    const hx = (x1 - x0 + 1) / gx, hy = (y1 - y0 + 1) / gy;
    const head = new Int32Array(gx * gy).fill(-1), next = new Int32Array(n), cell = new Int32Array(n);
    for (let p = 0; p < n; p++) {
      cell[p] = -1;
      if (d[base + 2 * p] === OUT) continue;
      const c = Math.min(gx - 1, ((d[base + 2 * p] - x0) / hx) | 0) + gx * Math.min(gy - 1, ((d[base + 2 * p + 1] - y0) / hy) | 0);
      cell[p] = c; next[p] = head[c]; head[c] = p;
    }
    const out = new Float32Array(n);
    const cap = 3 * Math.max(hx, hy); // a lone path's copies stay near it
    for (let p = 0; p < n; p++) {
      if (cell[p] < 0) continue; // not sent: no copies drawn either
      const x = d[base + 2 * p], y = d[base + 2 * p + 1];
      const cxi = cell[p] % gx, cyi = (cell[p] / gx) | 0;
      let best = cap * cap;
      for (let ring = 1; ring <= 3 && best >= (ring - 1) * (ring - 1) * Math.min(hx, hy) ** 2; ring++) {
        for (let yy = Math.max(0, cyi - ring); yy <= Math.min(gy - 1, cyi + ring); yy++) {
          for (let xx = Math.max(0, cxi - ring); xx <= Math.min(gx - 1, cxi + ring); xx++) {
            if (Math.max(Math.abs(xx - cxi), Math.abs(yy - cyi)) !== ring && ring > 1) continue;
            for (let q = head[yy * gx + xx]; q >= 0; q = next[q]) {
              if (q === p) continue;
              const dx = d[base + 2 * q] - x, dy = d[base + 2 * q + 1] - y, e = dx * dx + dy * dy;
              if (e < best) best = e;
            }
          }
        }
      }
      out[p] = Math.sqrt(best) * unit;
    }
    near.push(out);
  }
  flow.near = near;
  // each copy's step in units of that distance: Gaussian, fixed for the flow
  const m = Math.max(0, 300000 - n), step = new Float32Array(2 * m);
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  for (let i = 0; i < m; i++) {
    const r = Math.sqrt(-2 * Math.log(rand())), a = 2 * Math.PI * rand();
    step[2 * i] = r * Math.cos(a); step[2 * i + 1] = r * Math.sin(a);
  }
  flow.step = step;
  return near;
}

function interpStops(stops, s) {
  for (let i = 1; i < stops.length; i++) {
    if (s <= stops[i][0] || i === stops.length - 1) {
      const [a, b] = [stops[i - 1], stops[i]];
      const w = Math.max(0, Math.min(1, (s - a[0]) / (b[0] - a[0])));
      return [1, 2, 3].map((c) => Math.round(a[c] + (b[c] - a[c]) * w));
    }
  }
  return [0, 0, 0];
}

// the flow's time at play position s, by the renderer's pacing table (--pace)
export function timeAt(flow, s, pace) {
  const table = flow.pace[pace];
  const u = Math.max(0, Math.min(1, s)) * (table.length - 1);
  const k = Math.min(table.length - 2, Math.floor(u));
  return table[k] + (table[k + 1] - table[k]) * (u - k);
}

// the camera's half extents at play position s (the renderer's camera at each frame)
export function viewAt(flow, s, pace) {
  const table = flow.view[pace];
  const u = Math.max(0, Math.min(1, s)) * (table.length - 1);
  const k = Math.min(table.length - 2, Math.floor(u)), w = u - k;
  const a = table[k], b = table[k + 1];
  return [a[0] + (b[0] - a[0]) * w, a[1] + (b[1] - a[1]) * w];
}

export function draw(canvas, flow, s, o) {
  // o: what the controls say (pace, background, trail, color, particles, density, field, fps)
  const t = timeAt(flow, s, o.pace);
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  if (!canvas.image || canvas.image.width !== W || canvas.image.height !== H) {
    canvas.image = ctx.createImageData(W, H);
    canvas.counts = new Uint16Array(W * H);
  }
  const img = canvas.image, px = new Uint32Array(img.data.buffer);
  const bgName = o.background;
  const ground = flow.ground[bgName];
  const bg = rgba(ground);
  const [vx, vy] = viewAt(flow, s, o.pace);
  const sc = Math.min(W / (2 * vx), H / (2 * vy)), cx = W / 2, cy = H / 2;
  const k = Math.round(t * (flow.times - 1)); // overlays: the nearest time sent
  const trail = o.trail;
  const under = o.density && flow.inside && flow.header_inside.density;
  if (under) drawDensity(px, W, H, flow, k, sc, ground, bgName);
  else if (trail > 0) {
    // a fading trail: what was drawn keeps a share of itself a frame, so that it lasts about
    // `trail` frames of the GIF (25 a second) at this display's rate
    const keep = Math.exp(-3 / (trail * Math.max(1, (o.fps || 60) / FPS)));
    const a = img.data;
    for (let i = 0; i < a.length; i += 4) {
      a[i] = ground[0] + (a[i] - ground[0]) * keep;
      a[i + 1] = ground[1] + (a[i + 1] - ground[1]) * keep;
      a[i + 2] = ground[2] + (a[i + 2] - ground[2]) * keep;
      a[i + 3] = 255;
    }
  } else px.fill(bg);
  const n = flow.particles, T = flow.times, d = flow.paths, unit = flow.scale / 32767;
  const u = Math.min(1, Math.max(0, t)) * (T - 1);
  const k0 = Math.min(T - 2, Math.floor(u)), w = u - k0;
  const a0 = k0 * n * 2, a1 = (k0 + 1) * n * 2;
  const mode = o.color;
  const shown = Math.max(1, Math.min(300000, o.particles || 20000));
  if (!canvas.top || canvas.top.length !== W * H) canvas.top = new Uint32Array(W * H);
  const counts = canvas.counts, top = canvas.top;
  counts.fill(0);
  // each particle is a dot x dot square, as the renderer draws it (one pixel per 256 of the
  // canvas's longer side; one pixel over p_t, so that the density shows between them); the
  // last particle on a pixel gives its colour
  const dot = under ? 1 : Math.max(1, Math.round(Math.max(W, H) / 256)), half = (dot - 1) / 2;
  const f = unit * sc;
  // beyond the n paths sent, copies of them, each a fixed Gaussian step away from its path, as
  // wide as the distance to the path's nearest neighbour at that time (so they fill
  // the space between the paths as independent particles would, and stay on the ink where the
  // paths are dense)
  const copies = Math.ceil(shown / n) - 1;
  const near = copies > 0 ? spread(flow) : null;
  let ra = null, rb = null, rw = 0;
  const step = near ? flow.step : null;
  if (near) {
    const v = Math.min(1, Math.max(0, t)) * (near.length - 1);
    const m = Math.min(near.length - 2, Math.floor(v));
    ra = near[m]; rb = near[m + 1]; rw = v - m;
  }
  for (let i = 0; i < shown; i++) {
    const p = i % n, copy = (i / n) | 0;
    const j = 2 * p;
    if (d[a0 + j] === OUT || d[a1 + j] === OUT) continue; // too far out to be sent
    let X = cx + (d[a0 + j] + (d[a1 + j] - d[a0 + j]) * w) * f;
    let Y = cy - (d[a0 + j + 1] + (d[a1 + j + 1] - d[a0 + j + 1]) * w) * f;
    if (copy) {
      const r = (ra[p] + (rb[p] - ra[p]) * rw) * sc, at = 2 * (i - n);
      X += r * step[at]; Y += r * step[at + 1];
    }
    const x0 = Math.floor(X - half), y0 = Math.floor(Y - half);
    if (x0 < -dot || y0 < -dot || x0 >= W || y0 >= H) continue;
    for (let dy = 0; dy < dot; dy++) {
      const y = y0 + dy;
      if (y < 0 || y >= H) continue;
      for (let dx = 0; dx < dot; dx++) {
        const x = x0 + dx;
        if (x < 0 || x >= W) continue;
        const at = y * W + x;
        counts[at]++;
        top[at] = p;
      }
    }
  }
  if (mode === "density") {
    // the renderer's density colouring: overlap counts through a heat ramp (3 or more: the top)
    const ramp = flow.heat[bgName];
    const lut = [0, 1, 2, 3].map((c) => ramp[Math.round(Math.min(1, Math.log1p(c) / SATURATE) * 255)]);
    for (let i = 0; i < counts.length; i++) {
      const c = counts[i];
      if (c) px[i] = lut[Math.min(c, 3)];
    }
  } else {
    const [l1, l2, l3] = flow.levelsOf[bgName][mode];
    for (let i = 0; i < counts.length; i++) {
      const c = counts[i];
      if (c) px[i] = (c === 1 ? l1 : c === 2 ? l2 : l3)[top[i]];
    }
  }
  ctx.putImageData(img, 0, 0);
  if (o.field && flow.inside && flow.header_inside.field) drawField(ctx, flow, k, sc, W, H, bgName);
}

function drawDensity(px, W, H, flow, k, sc, ground, bgName) {
  // p_t of the nearest time sent, over its own view (a G x G grid), as a tint under the particles
  const G = flow.inside.densityGrid, grid = flow.inside.density, off = k * G * G;
  const [hx, hy] = flow.inside.box[k];
  const tint = bgName === "dark" ? [80, 150, 255] : [40, 90, 220];
  const lut = new Uint32Array(256);
  for (let v = 0; v < 256; v++) {
    const a = 0.55 * Math.sqrt(v / 255);
    lut[v] = rgba(ground.map((g, c) => Math.round(g + (tint[c] - g) * a)));
  }
  const cx = W / 2, cy = H / 2;
  for (let y = 0; y < H; y++) {
    const wy = (cy - y - 0.5) / sc; // world y of the pixel's centre
    const gy = Math.floor(((hy - wy) / (2 * hy)) * G);
    const row = y * W;
    if (gy < 0 || gy >= G) { px.fill(lut[0], row, row + W); continue; }
    for (let x = 0; x < W; x++) {
      const wx = (x + 0.5 - cx) / sc;
      const gx = Math.floor(((wx + hx) / (2 * hx)) * G);
      px[row + x] = gx < 0 || gx >= G ? lut[0] : lut[grid[off + gy * G + gx]];
    }
  }
}

function drawField(ctx, flow, k, sc, W, H, bgName) {
  // v at the centres of an F x F grid over the view of the nearest time sent, as arrows whose
  // length is the speed over that time's largest (a quiver normalised per time)
  const F = flow.inside.fieldGrid, v = flow.inside.field, off = k * F * F * 2;
  const [hx, hy] = flow.inside.box[k];
  const cell = Math.min((2 * hx * sc) / F, (2 * hy * sc) / F);
  ctx.save();
  ctx.strokeStyle = bgName === "dark" ? "rgba(255,255,255,0.75)" : "rgba(0,0,0,0.6)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let r = 0; r < F; r++) {
    for (let c = 0; c < F; c++) {
      const i = off + 2 * (r * F + c);
      const ux = v[i] / 32767, uy = v[i + 1] / 32767;
      const L = Math.hypot(ux, uy);
      if (L < 0.02) continue;
      const dx = ux * cell * 0.9, dy = -uy * cell * 0.9; // centred on the node
      const X = W / 2 + (((c + 0.5) / F) * 2 * hx - hx) * sc - dx / 2;
      const Y = H / 2 - (hy - ((r + 0.5) / F) * 2 * hy) * sc - dy / 2;
      ctx.moveTo(X, Y); ctx.lineTo(X + dx, Y + dy);
      const a = Math.atan2(dy, dx), h = Math.min(4, 0.35 * Math.hypot(dx, dy));
      ctx.lineTo(X + dx - h * Math.cos(a - 0.5), Y + dy - h * Math.sin(a - 0.5));
      ctx.moveTo(X + dx, Y + dy);
      ctx.lineTo(X + dx - h * Math.cos(a + 0.5), Y + dy - h * Math.sin(a + 0.5));
    }
  }
  ctx.stroke();
  ctx.restore();
}

export function size(canvas, flow) {
  const room = Math.min(480, document.body.clientWidth - 24);
  const [w, h] = flow.size; // the renderer's canvas for this frame (480 px on its longer side)
  const f = Math.max(160, room) / Math.max(w, h);
  canvas.width = Math.max(2, Math.round(w * f));
  canvas.height = Math.max(2, Math.round(h * f));
}

