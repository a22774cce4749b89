// flowgif view's drawing pad: black strokes on a white square, sent as a PNG.

export function makePad(pad, onFlow, onMorph) {
  const pen = pad.getContext("2d");
  const clear = () => { pen.fillStyle = "#fff"; pen.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let drawing = null;
  const point = (e) => {
    const r = pad.getBoundingClientRect();
    return [((e.clientX - r.left) / r.width) * pad.width, ((e.clientY - r.top) / r.height) * pad.height];
  };
  pad.addEventListener("pointerdown", (e) => {
    pad.setPointerCapture(e.pointerId);
    drawing = point(e);
    pen.fillStyle = "#000";
    pen.beginPath(); pen.arc(drawing[0], drawing[1], 7, 0, 2 * Math.PI); pen.fill();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const p = point(e);
    pen.strokeStyle = "#000"; pen.lineWidth = 14; pen.lineCap = "round";
    pen.beginPath(); pen.moveTo(...drawing); pen.lineTo(...p); pen.stroke();
    drawing = p;
  });
  for (const end of ["pointerup", "pointercancel"]) pad.addEventListener(end, () => { drawing = null; });
  return {
    clear,
    flow: () => pad.toBlob((b) => onFlow(b), "image/png"),
    morph: () => pad.toBlob((b) => onMorph(b), "image/png"),
  };
}
