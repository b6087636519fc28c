// Two runs compared: each metric both reported, one chart with both runs'
// curves over the step (the x values are the union of both runs' steps; a
// run with no report at a step has a gap there). Accuracies on [0, 1].
import { lineChart } from "./charts.js";

const script = document.getElementById("compare-script");
const COLORS = ["#1a73e8", "#e8710a"];
const metrics = JSON.parse(document.getElementById("compare-data").textContent);
let drawn = 0;
for (const m of metrics) {
  const box = document.querySelector(`#compare-metrics .chart-box[data-metric="${CSS.escape(m.name)}"]`);
  if (!box) continue;
  const steps = [...new Set([...m.a, ...m.b].map((p) => p[0]))].sort((x, y) => x - y);
  const at = (points) => {
    const byStep = new Map(points.map((p) => [p[0], p[1]]));
    return steps.map((s) => (byStep.has(s) ? byStep.get(s) : null));
  };
  lineChart(box, {
    xLabel: "step", yLabel: m.name.split("/").pop(), height: 200, x: steps, yRange: m.range || undefined,
    series: [
      { label: `run ${script.dataset.a}`, values: at(m.a), color: COLORS[0], spanGaps: true },
      { label: `run ${script.dataset.b}`, values: at(m.b), color: COLORS[1], dash: [6, 3], spanGaps: true },
    ],
  });
  drawn += 1;
}
document.getElementById("compare-metrics").dataset.drawn = String(drawn);
