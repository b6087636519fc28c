// The console's endpoint pages, live: while a generation job is queued or
// running, poll the API every 2 s and move its numbers (answered, failed,
// requests, tokens, status, error). On a job's page the failures table is
// read again when the failed count grows, and the page reloads once when
// the job finishes. The API never sends an endpoint's key, so nothing here
// can show it.
const POLL_MS = 2000;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

async function getJson(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
  return resp.json();
}

function fill(box, job) {
  for (const node of box.querySelectorAll("[data-field]")) {
    const name = node.dataset.field;
    if (!(name in job)) continue;
    node.textContent = String(job[name] ?? "");
    if (name === "status") node.className = `status status-${job.status}`;
    if (name === "error") node.hidden = !job.error;
  }
  const bar = box.querySelector("progress");
  if (bar) bar.value = job.answered;
}

function failureRow(f) {
  const row = document.createElement("tr");
  const when = new Date(f.created_at).toLocaleTimeString();
  for (const [text, cls] of [[f.external_id], [f.attempts], [f.error, "error"], [when]]) {
    const cell = document.createElement("td");
    cell.textContent = String(text);
    if (cls) cell.className = cls;
    row.append(cell);
  }
  return row;
}

// One job's page.
const one = document.getElementById("job");
if (one && one.dataset.live === "1") {
  let failed = Number(one.querySelector('[data-field="failed"]').textContent);
  const poll = async () => {
    try {
      const job = await getJson(`/api/generation-jobs/${one.dataset.job}/`);
      fill(one, job);
      const status = document.getElementById("job-status");
      status.textContent = job.status;
      status.className = `status status-${job.status}`;
      if (FINISHED.has(job.status)) {
        window.location.reload();
        return;
      }
      if (job.failed > failed) {
        failed = job.failed;
        const rows = await getJson(`/api/generation-jobs/${one.dataset.job}/failures/?limit=100`);
        document.querySelector("#failure-list tbody").replaceChildren(...rows.map(failureRow));
      }
    } catch (err) {
      console.warn(err);
    }
    setTimeout(poll, POLL_MS);
  };
  setTimeout(poll, POLL_MS);
}

// The campaign's list of jobs.
const list = document.getElementById("job-list");
if (list && list.dataset.live === "1") {
  const poll = async () => {
    try {
      const jobs = await getJson(`/api/campaigns/${list.dataset.campaign}/generation-jobs/`);
      let live = false;
      for (const job of jobs) {
        const row = list.querySelector(`tr[data-job="${job.id}"]`);
        if (row) fill(row, job);
        live ||= !FINISHED.has(job.status);
      }
      if (!live) {
        window.location.reload(); // the endpoints' answer counts are current again
        return;
      }
    } catch (err) {
      console.warn(err);
    }
    setTimeout(poll, POLL_MS);
  };
  setTimeout(poll, POLL_MS);
}
