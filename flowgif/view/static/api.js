// flowgif view's requests to its server: every one the page sends goes through here.
// A flow's body is: uint32 header length, the header (JSON), then the blocks it names.

const TYPES = { "<i2": Int16Array, "|u1": Uint8Array, "<u4": Uint32Array, "<f4": Float32Array };

export function decode(buffer) {
  const len = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, len)));
  const base = 4 + len;
  for (const [name, b] of Object.entries(header.blocks)) {
    const count = b.shape.reduce((a, c) => a * c, 1);
    header[name] = new TYPES[b.dtype](buffer, base + b.offset, count);
  }
  return header;
}

// A request the server may work on for a while: `onProgress(done or null)` hears how far it
// has come (polled by the job's name; null: waiting, or finished); `signal` aborts it, and the
// server then drops the work (a closed tab does the same). Its body, or an Error with the
// server's one line.
export async function fetchBody(url, options = {}, signal, onProgress = () => {}) {
  const job = Math.random().toString(36).slice(2) + Date.now().toString(36);
  const sep = url.includes("?") ? "&" : "?";
  let polling = true;
  const poll = async () => {
    while (polling) {
      await new Promise((r) => setTimeout(r, 250));
      if (!polling) break;
      try {
        const p = await (await fetch(`/api/progress/${job}`)).json();
        if (polling) onProgress(p.state === "running" ? p.done : -1);
      } catch (e) { /* the answer is on its way */ }
    }
  };
  poll();
  try {
    const res = await fetch(`${url}${sep}job=${job}`, { ...options, signal });
    if (!res.ok) {
      let reason = `${res.status}`;
      try { reason = (await res.json()).error; } catch (e) { /* not JSON */ }
      throw new Error(reason);
    }
    return await res.arrayBuffer();
  } finally {
    polling = false;
    onProgress(null);
  }
}

export async function fetchJSON(url, options = {}, signal, onProgress) {
  return JSON.parse(new TextDecoder().decode(await fetchBody(url, options, signal, onProgress)));
}

export async function listRuns() {
  const res = await fetch("/api/runs");
  if (!res.ok) throw new Error(`the runs could not be listed (${res.status})`);
  return (await res.json()).runs;
}
