// A training run's console page: each metric the server laid out as a chart
// (annotate/selectors/run_page.py, metric_layout) drawn with charts.js over
// the step, accuracies on [0, 1]; and, while the run is queued or running,
// a poll of GET /api/training-runs/<id>/ every 2 s that moves the stage
// bars, their ETA and the status. When the run reports new metrics the page
// fetches its own HTML again and swaps in the server's metrics and timeline
// (the server decides the layout, one place); when the run finishes it
// reloads once, so the logs, dataset and outputs are current.
import { lineChart } from "./charts.js";

const script = document.getElementById("run-script");
const runId = script.dataset.run;
const POLL_MS = 2000;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const ETA_FROM_FRACTION = 0.02;
let reported = Number(script.dataset.history || 0);

function drawCharts() {
  const data = JSON.parse(document.getElementById("run-charts").textContent);
  let drawn = 0;
  for (const box of document.querySelectorAll("#metrics .chart-box")) {
    const metric = data[box.dataset.metric];
    if (!metric) continue;
    // A chart folded away in <details> has no width yet: charts.js takes at least 240 px and resizes when it opens.
    lineChart(box, {
      xLabel: "step", yLabel: box.dataset.metric.split("/").pop(), height: 180,
      x: metric.points.map((p) => p[0]), yRange: metric.range || undefined,
      series: [{ label: box.dataset.metric, values: metric.points.map((p) => p[1]) }],
    });
    drawn += 1;
  }
  document.getElementById("metrics").dataset.drawn = String(drawn);
}

function duration(s) {
  if (s < 60) return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
  const m = Math.floor(Math.round(s) / 60);
  return m < 60 ? `${m} min ${Math.round(s) % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// Seconds left at the rate of the stage's work so far (its progress grows with work done).
function eta(run, name) {
  const started = (run.stages[name] || {}).started_at;
  if (!started || run.progress < ETA_FROM_FRACTION || run.progress >= 1) return null;
  const elapsed = (Date.now() - Date.parse(started)) / 1000;
  return Math.max(0, (elapsed * (1 - run.progress)) / run.progress);
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
    const state = (run.stages[name] || {}).status || "pending";
    let fraction = 0;
    const current = name === run.stage && !FINISHED.has(run.status);
    if (state === "succeeded") fraction = 1;
    else if (current) fraction = run.progress;
    li.className = `stage-bar stage-${state}`;
    li.querySelector("progress").value = fraction;
    li.querySelector("progress").textContent = `${Math.round(100 * fraction)}%`;
    // A stage with nothing to do (sft without new demonstrations) succeeded and says it skipped.
    const outputs = (run.stages[name] || {}).outputs || {};
    const skipped = state === "succeeded" && outputs.skipped === true;
    const label = li.querySelector(".stage-status");
    label.textContent = state === "running" ? `${state} ${Math.round(100 * fraction)}%` : skipped ? "skipped" : state;
    label.title = skipped ? outputs.reason || "" : "";
    const left = current && state === "running" ? eta(run, name) : null;
    li.querySelector(".stage-eta").textContent = left === null ? "" : `about ${duration(left)} left`;
  }
}

// The server's layout of the metrics and the timeline, fetched again.
async function refreshSections() {
  const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (!resp.ok) return;
  const fresh = new DOMParser().parseFromString(await resp.text(), "text/html");
  for (const id of ["metrics", "timeline"]) {
    const next = fresh.getElementById(id);
    const open = document.querySelector("#other-metrics")?.open;
    if (next) document.getElementById(id).replaceWith(document.adoptNode(next));
    if (id === "metrics" && open && document.getElementById("other-metrics")) document.getElementById("other-metrics").open = true;
  }
  drawCharts();
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
      const count = (run.metrics_history || []).length;
      if (count !== reported) {
        reported = count;
        await refreshSections();
      }
    }
  } catch (err) {
    console.warn("run poll failed; trying again", err);
  }
  setTimeout(poll, POLL_MS);
}

drawCharts();
if (script.dataset.live === "1") setTimeout(poll, POLL_MS);
