// The models page's "score after each round": one series per model over
// the round index, its 95% bootstrap interval as a band (data from
// annotate/selectors/leaderboard.py, _scores_by_round).
import { lineChart } from "./charts.js";

const data = JSON.parse(document.getElementById("score-by-round-data").textContent);
const box = document.getElementById("score-by-round-chart");
lineChart(box, {
  xLabel: "round", yLabel: "score", height: 260, x: data.rounds,
  series: data.models.map((m) => ({ label: m.name, values: m.score, lo: m.lower, hi: m.upper })),
  lines: [{ label: "mean model", value: 1000, color: "#9aa0a6" }],
});
box.dataset.drawn = String(data.models.length);
