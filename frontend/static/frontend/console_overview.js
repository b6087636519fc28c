// A campaign's overview page: draws one chart per question from the figures
// the server embedded (json_script "overview-charts", built by
// annotate/selectors/overview.py), and fetches the "now" panel again every
// few seconds while the page is visible, so what is running, who is rating
// and what is stuck stay current without a reload.
import { lineChart } from "./charts.js";

const POLL_MS = 5000;
const PALETTE = { previous: "#1a73e8", base: "#188038", reference: "#a142f4" };
const TIME_COLORS = {
  rating: "#1a73e8", queue: "#d93025", sft: "#12b5cb", reward: "#e8710a", policy: "#188038", generate: "#a142f4", snapshot_open: "#9aa0a6",
};
const TIME_LABELS = {
  rating: "rating", queue: "gpu queue", sft: "sft", reward: "reward", policy: "policy", generate: "generate", snapshot_open: "snapshot + open",
};

const REASON_COLORS = {
  uncertainty: "#d93025", spread: "#e8710a", exploration: "#1a73e8", random: "#9aa0a6", gold: "#f9ab00", reference: "#a142f4",
};

function measured(values) {
  return values.some((v) => v !== null && v !== undefined);
}

function note(box, text) {
  const p = document.createElement("p");
  p.className = "muted not-measured";
  p.textContent = text;
  box.replaceChildren(p);
}

function drawCharts(data) {
  const x = data.x;
  const boxes = Object.fromEntries([...document.querySelectorAll("[data-chart]")].map((b) => [b.dataset.chart, b]));
  if (boxes.win) {
    const series = [];
    const add = (key, label) => {
      const s = data.win[key];
      if (measured(s.values)) series.push({ label, values: s.values, lo: s.lo, hi: s.hi, color: PALETTE[key] });
    };
    add("previous", "vs previous version");
    add("base", "vs base (v0)");
    add("reference", `vs ${data.win.reference_model || "reference"}`);
    if (series.length) {
      lineChart(boxes.win, { title: "Candidate win rate", xLabel: "round", yLabel: "win rate", x, yRange: [0, 1], series, lines: [{ label: "even", value: 0.5, color: "#666" }] });
    } else note(boxes.win, "Candidate win rate: not measured yet (round 0 pairs the base with itself; round 1 is the first with a candidate).");
  }
  if (boxes.kl) {
    // The campaign's KL anchor: the base model, or the SFT model (sft_anchor "sft").
    const klTitle = data.kl.reference === "sft" ? "KL to the SFT model" : "KL to the base";
    if (measured(data.kl.values)) {
      const lines = data.kl.budget === null || data.kl.budget === undefined ? [] : [{ label: "KL budget", value: data.kl.budget, color: "#a00" }];
      lineChart(boxes.kl, { title: `${klTitle} (nats per answer)`, xLabel: "round", yLabel: "KL", x, yRange: [0, null], series: [{ label: "candidate", values: data.kl.values }], lines });
    } else note(boxes.kl, `${klTitle}: not recorded by any policy step yet.`);
  }
  if (boxes.heldout) {
    if (measured(data.heldout.values)) {
      lineChart(boxes.heldout, { title: "Reward model held-out accuracy", xLabel: "round", yLabel: "accuracy", x, yRange: [0, 1], series: [{ label: "held-out accuracy", values: data.heldout.values, lo: data.heldout.lo, hi: data.heldout.hi, color: "#e8710a" }], lines: [{ label: "chance", value: 0.5, color: "#666" }] });
    } else note(boxes.heldout, "Reward model held-out accuracy: no reward model trained yet.");
  }
  if (boxes.rate) {
    if (measured(data.rate.values)) {
      lineChart(boxes.rate, { title: "Ratings per hour", xLabel: "round", yLabel: "ratings / h", x, yRange: [0, null], series: [{ label: "ratings per hour", values: data.rate.values, color: "#12b5cb" }] });
    } else note(boxes.rate, "Ratings per hour: no ratings yet.");
  }
  if (boxes.time) {
    const series = Object.keys(TIME_LABELS)
      .filter((part) => measured(data.minutes[part] || []))
      .map((part) => ({ label: TIME_LABELS[part], values: data.minutes[part], color: TIME_COLORS[part] }));
    if (series.length) {
      lineChart(boxes.time, { title: "Time per round by stage (minutes)", xLabel: "round", yLabel: "minutes", x, yRange: [0, null], series });
    } else note(boxes.time, "Time per round: nothing timed yet.");
  }
  if (boxes.selection && data.selection) {
    const series = Object.entries(data.selection.series)
      .map(([reason, values]) => ({ label: reason, values, color: REASON_COLORS[reason] }));
    if (series.length) {
      lineChart(boxes.selection, { title: "Comparisons by why they were chosen", xLabel: "round", yLabel: "comparisons", x: data.selection.x, yRange: [0, null], series });
    } else note(boxes.selection, "Selection: no comparison recorded yet.");
  }
}

const embedded = document.getElementById("overview-charts");
if (embedded) drawCharts(JSON.parse(embedded.textContent));

const panel = document.getElementById("now");
async function poll() {
  if (document.visibilityState === "visible") {
    try {
      const resp = await fetch(panel.dataset.url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (resp.ok) {
        panel.innerHTML = await resp.text();
        panel.dataset.polled = String(Number(panel.dataset.polled || 0) + 1);
      }
    } catch (err) {
      console.warn("overview poll failed; trying again", err);
    }
  }
  setTimeout(poll, POLL_MS);
}
if (panel) setTimeout(poll, POLL_MS);
