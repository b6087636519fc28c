// A training run's console page: metric curves drawn as inline SVG from the
// run's metrics_history, and, while the run is queued or running, a poll of
// GET /api/training-runs/<id>/ every 2 s that moves the stage bars, the
// status and the curves. When the run finishes the page reloads once, so
// the server-rendered logs, dataset and outputs are current.
const script = document.getElementById("run-script");
const runId = script.dataset.run;
const POLL_MS = 2000;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const SVG = "http://www.w3.org/2000/svg";
const W = 320, H = 160, PAD = { left: 48, right: 10, top: 22, bottom: 20 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(v) {
  const a = Math.abs(v);
  return a !== 0 && (a < 0.01 || a >= 1e4) ? v.toExponential(2) : v.toFixed(3);
}

// One small chart per metric: x is the report's order (steps restart per
// stage), y the value; min and max labelled.
function chart(name, points) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${name} over ${points.length} reports`, "data-metric": name });
  svg.append(el("title", {}, `${name}: last ${fmt(points[points.length - 1].v)}`));
  const ys = points.map((p) => p.v);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi === lo) { lo -= 0.5; hi += 0.5; }
  const n = Math.max(points.length - 1, 1);
  const x = (i) => PAD.left + ((W - PAD.left - PAD.right) * i) / n;
  const y = (v) => PAD.top + ((H - PAD.top - PAD.bottom) * (hi - v)) / (hi - lo);
  svg.append(el("text", { x: PAD.left, y: 14, "font-size": 12, "font-weight": "bold" }, name));
  svg.append(el("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom, stroke: "#bbb" }));
  svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, stroke: "#bbb" }));
  svg.append(el("text", { x: PAD.left - 4, y: PAD.top + 4, "font-size": 10, "text-anchor": "end", fill: "#555" }, fmt(hi)));
  svg.append(el("text", { x: PAD.left - 4, y: H - PAD.bottom, "font-size": 10, "text-anchor": "end", fill: "#555" }, fmt(lo)));
  svg.append(el("text", { x: W - PAD.right, y: H - 4, "font-size": 10, "text-anchor": "end", fill: "#555" }, `${points.length} reports`));
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
  svg.append(el("path", { class: "series", d, fill: "none", stroke: "#1a73e8", "stroke-width": 1.5, "data-metric": name }));
  if (points.length === 1) svg.append(el("circle", { cx: x(0), cy: y(points[0].v), r: 3, fill: "#1a73e8" }));
  const figure = document.createElement("figure");
  figure.dataset.metric = name;
  figure.append(svg);
  return figure;
}

function plotGroup(box, stage) {
  const section = document.createElement("section");
  section.className = "plot-group";
  section.dataset.stage = stage;
  section.dataset.metrics = "";
  const heading = document.createElement("h4");
  heading.textContent = stage;
  const plots = document.createElement("div");
  plots.className = "plots";
  section.append(heading, plots);
  box.insertBefore(section, document.getElementById("plots-empty"));
  return section;
}

// The server lists each stage's metrics in drawing order (one .plot-group
// per stage). A live run reports metrics the page did not list when it
// loaded (a stage that started since): they are drawn after the listed
// ones, in the order they first came, until the reload at the run's end
// puts them in the server's order.
function drawPlots(history) {
  const box = document.getElementById("plots");
  const groups = new Map();
  for (const section of box.querySelectorAll(".plot-group")) groups.set(section.dataset.stage, section);
  const listed = new Set([...groups.values()].flatMap((s) => s.dataset.metrics.split(",").filter(Boolean)));
  for (const row of history) {
    for (const [name, value] of Object.entries(row)) {
      if (!name.includes("/") || typeof value !== "number" || listed.has(name)) continue;
      listed.add(name);
      if (!groups.has(row.stage)) groups.set(row.stage, plotGroup(box, row.stage));
      const section = groups.get(row.stage);
      section.dataset.metrics = [...section.dataset.metrics.split(",").filter(Boolean), name].join(",");
    }
  }
  let drawn = 0;
  for (const section of groups.values()) {
    const figures = [];
    for (const name of section.dataset.metrics.split(",").filter(Boolean)) {
      const points = history.filter((h) => typeof h[name] === "number").map((h) => ({ v: h[name], step: h.step }));
      if (points.length) figures.push(chart(name, points));
    }
    section.querySelector(".plots").replaceChildren(...figures);
    drawn += figures.length;
  }
  document.getElementById("plots-empty").hidden = drawn > 0;
  box.dataset.drawn = String(drawn);
}

function updateRun(run) {
  const status = document.getElementById("run-status");
  status.textContent = run.status;
  status.className = `status status-${run.status}`;
  const error = document.getElementById("run-error");
  error.textContent = run.error || "";
  error.hidden = !run.error;
  for (const li of document.querySelectorAll(".stage-bar")) {
    const name = li.dataset.stage;
    const info = run.stages[name] || {};
    const state = info.status || "pending";
    let fraction = 0;
    if (state === "succeeded") fraction = 1;
    else if (name === run.stage && !FINISHED.has(run.status)) fraction = run.progress;
    li.className = `stage-bar stage-${state}`;
    li.querySelector("progress").value = fraction;
    li.querySelector("progress").textContent = `${Math.round(100 * fraction)}%`;
    li.querySelector(".stage-status").textContent = state;
  }
  drawPlots(run.metrics_history || []);
}

async function poll() {
  try {
    const resp = await fetch(`/api/training-runs/${runId}/`, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (resp.ok) {
      const run = await resp.json();
      updateRun(run);
      if (FINISHED.has(run.status)) {
        window.location.reload();
        return;
      }
    }
  } catch (err) {
    console.warn("run poll failed; trying again", err);
  }
  setTimeout(poll, POLL_MS);
}

drawPlots(JSON.parse(document.getElementById("run-history").textContent));
if (script.dataset.live === "1") setTimeout(poll, POLL_MS);
