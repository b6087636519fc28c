// The rating page's "done" state: nothing left for this annotator in the
// open round. It reads the progress API (so a reload shows real counts, not
// dashes), says in words what happens next (others still rating; the model
// training, with how long that took in earlier rounds; training stopped),
// and, while the tab is visible, asks that cheap API again every POLL_MS to
// hand back to the rating code the moment the next round opens. A hidden tab
// asks nothing; showing it again asks at once.
const POLL_MS = 12_000;
const $ = (id) => document.getElementById(id);
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

async function readProgress(campaign) {
  const resp = await fetch(`/api/campaigns/${campaign}/progress/`, {
    credentials: "same-origin", headers: { Accept: "application/json" },
  });
  if (!resp.ok) throw new Error(`the server answered ${resp.status}`);
  return resp.json();
}

// What happens next, in words, from the current round and its training run.
function nextText(body) {
  const r = body.round;
  if (!r) return "The campaign has no round open yet.";
  if (body.status !== "active") return `The campaign is ${body.status}; nothing more to rate until it is active again.`;
  const next = r.round + 1;
  if (r.status === "collecting") {
    const left = Math.max(0, r.target_ratings - r.ratings);
    if (left) {
      return `Round ${r.round} still needs ${plural(left, "rating")} from other annotators. ` +
        `Then the model trains on the round's ratings and round ${next} opens.`;
    }
    if (!body.auto_train) {
      return `Round ${r.round} has all its ratings. The model trains on them once an engineer starts it; then round ${next} opens.`;
    }
    return `Round ${r.round} has all its ratings: the model trains on them next, then round ${next} opens.`;
  }
  const t = body.training || {};
  if (r.status === "failed" || t.run_status === "failed") {
    return `Training on round ${r.round} stopped with an error; the campaign's engineers see why in the console. ` +
      `Round ${next} opens once it is trained again.`;
  }
  const stage = t.stage ? ` (now: ${t.stage})` : "";
  if (t.eta_seconds === null || t.eta_seconds === undefined) {
    return `The model is training on your ratings${stage}; round ${next} opens when it is done ` +
      "(the campaign's first training round, so no earlier one to time it by).";
  }
  if (t.eta_seconds < 60) return `The model is training on your ratings${stage}; round ${next} opens in about a minute.`;
  return `The model is training on your ratings${stage}; round ${next} opens in about ${plural(Math.round(t.eta_seconds / 60), "minute")}.`;
}

function render(body, setCounters, poll) {
  const r = body.round;
  const m = body.mine;
  setCounters({ progress: m, round_progress: r });
  const where = r ? `in round ${r.round}` : "in this round";
  $("done-counts").textContent =
    `You rated ${plural(m.mine_in_round, "comparison")} ${where} and ${m.mine_in_campaign} in this campaign ` +
    `(${m.mine_today} today).` +
    (r ? ` Round ${r.round} has ${r.ratings} of its ${r.target_ratings} ratings.` : "");
  // Without polling the page has stopped for a reason of its own (paused, daily limit), said in done-text.
  // Written only when it changes: the line is a live region, read out on every change.
  const next = poll ? nextText(body) : "";
  if ($("done-next").textContent !== next) $("done-next").textContent = next;
}

// Show the counts and what comes next; with `poll`, keep asking while the tab
// is visible and call onRoundOpen() once a round after `round` (the one the
// page last rated in; null: the one the first answer names) is collecting,
// with that round's counts.
// Returns a function that stops it.
export function watchDone({ campaign, round, poll, setCounters, onRoundOpen }) {
  let timer = null;
  let stopped = false;
  let watched = round;
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  };
  async function check() {
    clearTimeout(timer);
    if (stopped) return;
    try {
      const body = await readProgress(campaign);
      if (stopped) return;
      const r = body.round;
      if (watched === null || watched === undefined) watched = r ? r.round : -1;
      if (poll && r && r.round > watched && r.status === "collecting" && body.status === "active") {
        stop();
        onRoundOpen({ progress: body.mine, round_progress: r });
        return;
      }
      render(body, setCounters, poll);
      $("done-checked").textContent = poll ? "This page checks every few seconds and shows the next round when it opens." : "";
    } catch (err) {
      $("done-checked").textContent = `Could not check for the next round (${err.message}); trying again.`;
    }
    if (poll && !stopped && document.visibilityState === "visible") timer = setTimeout(check, POLL_MS);
  }
  function onVisibility() {
    if (document.visibilityState === "visible") check();
    else clearTimeout(timer);
  }
  if (poll) document.addEventListener("visibilitychange", onVisibility);
  check();
  return stop;
}
