// Charts of the console pages, drawn the same way everywhere: a thin layer
// over uPlot (vendored and pinned, see vendor/VERSIONS.md; loaded by the
// console frame as the global `uPlot`). A page hands over what it measured
// (x values, series with optional intervals, a fixed y range where the
// quantity has one) and gets a chart that resizes with its box.
//
//   lineChart(box, {
//     title: "Win rate against the previous version", xLabel: "round", yLabel: "win rate",
//     x: [1, 2, 3], yRange: [0, 1],
//     series: [{ label: "candidate", values: [0.55, 0.6, 0.58], lo: [...], hi: [...] }],
//     lines: [{ label: "budget", value: 6, color: "#a00" }],
//   });
//
// Why a wrapper: each page would otherwise repeat uPlot's option object,
// the interval bands (two hidden series filled between), the fixed ranges
// (an accuracy is on [0, 1], not on its own min..max) and the resize
// handling. Values may be null (a gap). A series with one point is drawn as
// a dot with its value, never as an empty line.

const PALETTE = ["#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025", "#12b5cb", "#9aa0a6"];
const FILL = (color) => `${color}26`; // the same hue at 15% for an interval band

export function formatValue(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1e5)) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(3);
}

function paddedRange(lo, hi) {
  if (lo === null || hi === null) return [0, 1];
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 0.5;
    return [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}

function extent(arrays) {
  let lo = null, hi = null;
  for (const arr of arrays) {
    for (const v of arr || []) {
      if (v === null || v === undefined || Number.isNaN(v)) continue;
      lo = lo === null ? v : Math.min(lo, v);
      hi = hi === null ? v : Math.max(hi, v);
    }
  }
  return [lo, hi];
}

// Draws into `box` (an element; its content is replaced) and returns the
// uPlot instance. Options:
//   title, xLabel, yLabel  strings
//   x                      numbers (round index, step, seconds)
//   series                 [{label, values, lo?, hi?, color?, dash?, spanGaps?}]
//                          (spanGaps: draw the line across nulls, for two runs
//                          reporting at different steps; default a gap)
//   lines                  [{label, value, color?}]: horizontal reference lines (a budget, 0.5)
//   yRange                 [min, max] fixed; a bound may be null (from the data)
//   height                 pixels (default 200)
//   xFormat                (v) => label for the x axis ticks (default integers)
export function lineChart(box, opts) {
  const x = opts.x || [];
  const data = [x];
  const series = [{ label: opts.xLabel || "x", value: (u, v) => (v === null ? "–" : (opts.xFormat || String)(v)) }];
  const bands = [];
  const bounds = []; // indices of interval-bound series: drawn as a band, kept out of the legend
  (opts.series || []).forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const single = s.values.filter((v) => v !== null && v !== undefined).length <= 1;
    data.push(s.values);
    const main = data.length - 1;
    series.push({
      label: s.label, stroke: color, width: 2, dash: s.dash, spanGaps: Boolean(s.spanGaps),
      points: { show: single || x.length <= 12, size: single ? 8 : 5, fill: color },
      value: (u, v) => formatValue(v),
    });
    if (s.lo && s.hi) {
      data.push(s.hi, s.lo);
      const hiIdx = data.length - 2, loIdx = data.length - 1;
      const bound = (name) => ({ label: `${s.label} ${name}`, stroke: FILL(color), width: 1, points: { show: false }, value: (u, v) => formatValue(v) });
      series.push(bound("95% high"), bound("95% low"));
      bands.push({ series: [hiIdx, loIdx], fill: FILL(color) });
      bounds.push(hiIdx, loIdx);
      void main;
    }
  });
  for (const line of opts.lines || []) {
    data.push(x.map(() => line.value));
    series.push({ label: line.label, stroke: line.color || "#a00", width: 1, dash: [6, 4], points: { show: false }, value: () => formatValue(line.value) });
  }
  const [dataLo, dataHi] = extent(data.slice(1));
  const fixed = opts.yRange || [null, null];
  const [padLo, padHi] = paddedRange(dataLo, dataHi);
  const yMin = fixed[0] ?? padLo, yMax = fixed[1] ?? padHi;
  const [xLo, xHi] = extent([x]);
  const xRange = xLo === null ? [0, 1] : xLo === xHi ? [xLo - 1, xHi + 1] : [xLo, xHi];

  const width = () => Math.max(240, box.clientWidth || 320);
  const options = {
    title: opts.title,
    width: width(),
    height: opts.height || 200,
    series,
    bands,
    scales: { x: { time: false, range: () => xRange }, y: { range: () => [yMin, yMax] } },
    axes: [
      { label: opts.xLabel, values: (u, ticks) => ticks.map((t) => (opts.xFormat ? opts.xFormat(t) : Number.isInteger(t) ? String(t) : "")) },
      { label: opts.yLabel, size: 56, values: (u, ticks) => ticks.map(formatValue) },
    ],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
  };
  box.replaceChildren();
  const chart = new window.uPlot(options, data, box);
  // The legend names each series once: an interval is the shaded band, and
  // listing its two bounds as series of their own crowds the legend.
  const rows = chart.root.querySelectorAll(".u-legend .u-series");
  for (const i of bounds) if (rows[i]) rows[i].style.display = "none";
  chart.root.setAttribute("role", "img");
  chart.root.setAttribute("aria-label", opts.title || opts.yLabel || "chart");
  if (window.ResizeObserver) {
    let last = width();
    new ResizeObserver(() => {
      const w = width();
      if (w !== last) { last = w; chart.setSize({ width: w, height: options.height }); }
    }).observe(box);
  }
  return chart;
}
