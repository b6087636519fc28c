// The rating page: keyboard first, the next comparison at once, nothing lost.
//
// - The comparison on screen and one prefetched behind it are both leased
//   (POST next with `exclude`); a submit shows the prefetched one at once.
// - A submit goes to an outbox in localStorage with its idempotency key and
//   is sent (and re-sent with backoff on network failure) until the server
//   answers: 2xx = stored, 4xx = said plainly and dropped. The same key twice
//   makes one rating on the server. Each rating names the form the page was
//   built from (config.form), so one made before an admin changed the
//   aspects or the written-answer setting is stored as made, not refused.
// - Leases are renewed while the annotator is active; one that is lost
//   anyway is said plainly, and the submit then waits for the server's answer
//   before moving on.
// - Time on task counts only while the page is visible.
// Blind: the API sends no model names, and nothing here shows any.
//
// One file, since its parts (counters, outbox, time on task, leases,
// prefetch, keys) share one state: the comparison on screen and the one
// leased behind it. What shares none of it lives in api.js, markdown.js,
// rate_done.js (the page with nothing left to rate, waiting for the next round),
// rate_demo.js (the better-answer editor; its draft rides in the rating's body)
// rate_aspects.js (the rubric aspects' rows; their answers ride in it too)
// and rate_rank.js (a k-set's answers and the ranking keys; its value rides in the body).
import { api, errorText, escapeHtml, serverOffsetMs, uuid4 } from "./api.js";
import { markdown, markdownText } from "./markdown.js";
import { watchDone } from "./rate_done.js";
import { demoEditor } from "./rate_demo.js";
import { aspectRows } from "./rate_aspects.js";
import { rankingUi } from "./rate_rank.js";

const config = JSON.parse(document.getElementById("rate-config").textContent);
const $ = (id) => document.getElementById(id);
const main = $("rate");
const form = $("rating-form");
const OUTBOX_KEY = `ratchet.outbox.v1.${config.user}.${config.campaign}`;
const TIME_KEY = `ratchet.time.v1.${config.user}`;
const ACTIVE_WINDOW_MS = 60_000; // input within the last minute = active
window.__ratchetTimings = []; // ms from submit key press to the next comparison painted (bench/)

function promptHtml(item) {
  if (Array.isArray(item.prompt_turns) && item.prompt_turns.length) {
    return item.prompt_turns
      .map((t) => {
        const role = escapeHtml(t.role || "user");
        return `<div class="turn role-${role.replace(/[^a-z]/gi, "")}"><div class="role">${role}</div>${markdownText(t.content)}</div>`;
      })
      .join("");
  }
  return markdownText(item.prompt);
}

// An answer the model stopped at its token limit says so at its end.
const CUT_NOTE = '<p class="truncated-note">… cut at the token limit</p>';
function answerHtml(text, truncated) { return markdownText(text) + (truncated ? CUT_NOTE : ""); }

// Render once, when the comparison arrives (so showing a prefetched one is only a DOM swap).
function prepare(data) {
  return {
    data,
    html: {
      prompt: promptHtml(data),
      a: answerHtml(data.response_a, data.response_a_truncated),
      b: answerHtml(data.response_b, data.response_b_truncated),
      answers: data.answers ? data.answers.map((a) => answerHtml(a.text, a.truncated)) : null, // a k-set
    },
    leaseEnd: Date.parse(data.leased_until) - serverOffsetMs(), // local clock
    leaseTtl: Math.max(30_000, Date.parse(data.leased_until) - (Date.now() + serverOffsetMs())),
    leaseLost: false,
    key: uuid4(),
  };
}

// --- counters ---------------------------------------------------------------
// The server's counts from the latest `next` answer, plus ratings stored since that request was sent.
let confirmed = 0;
let base = null; // {progress, round_progress, confirmedAtRequest}

function renderCounters() {
  if (!base) return;
  const extra = confirmed - base.confirmedAtRequest;
  $("count-today").textContent = base.progress.mine_today + extra;
  $("count-campaign").textContent = base.progress.mine_in_campaign + extra;
  const r = base.round_progress;
  if (r) {
    const ratings = Math.min(r.ratings + extra, r.target_ratings);
    $("round-label").textContent = `round ${r.round}`;
    $("round-bar").max = r.target_ratings || 1;
    $("round-bar").value = ratings;
    $("round-text").textContent = `${ratings} / ${r.target_ratings} ratings (${r.target_ratings ? Math.round((100 * ratings) / r.target_ratings) : 0}%)`;
  }
}

// --- outbox: submits and skips that must reach the server -------------------
function outboxRead() {
  try { return JSON.parse(localStorage.getItem(OUTBOX_KEY) || "[]"); } catch { return []; }
}
function outboxWrite(items) { localStorage.setItem(OUTBOX_KEY, JSON.stringify(items)); }
function outboxAdd(item) { outboxWrite([...outboxRead().filter((i) => i.key !== item.key), item]); }
function outboxRemove(key) { outboxWrite(outboxRead().filter((i) => i.key !== key)); }
const pendingIds = () => outboxRead().map((i) => i.body.comparison ?? i.comparison);

let draining = false;
let retryTimer = null;
let backoffMs = 1000;
const waiters = new Map(); // outbox key -> resolve(result), for submits that wait for the answer

async function sendOne(item) {
  if (item.kind === "skip") return api(`/api/comparisons/${item.comparison}/skip/`, { reason: item.reason });
  return api("/api/ratings/", item.body);
}

async function drain() {
  if (draining) return;
  draining = true;
  clearTimeout(retryTimer);
  try {
    // Oldest first, until the outbox is empty (items added meanwhile included).
    for (let item = outboxRead()[0]; item; item = outboxRead()[0]) {
      let result;
      try {
        result = await sendOne(item);
      } catch (err) {
        result = { status: 0, data: null }; // the network failed: keep it, try again
      }
      const { status, data } = result;
      if (status === 0 || status >= 500 || status === 429 || status === 403) {
        const waiting = outboxRead().length;
        const why = status === 403 ? "you seem to be logged out (log in again in another tab; it is kept)" : "no answer from the server";
        setStatus(`${waiting} ${waiting === 1 ? "submit" : "submits"} not sent yet: ${why}. Retrying in ${Math.round(backoffMs / 1000)} s.`);
        retryTimer = setTimeout(drain, backoffMs);
        backoffMs = Math.min(backoffMs * 2, 30_000);
        waiters.get(item.key)?.({ status, data, pending: true });
        return;
      }
      backoffMs = 1000;
      outboxRemove(item.key);
      if (status >= 200 && status < 300) {
        if (item.kind !== "skip" && status === 201) confirmed += 1;
        renderCounters();
        if (data?.form_changed) {
          showNotice("This campaign's rating form changed after this page loaded; your rating was kept as you made it. Reload the page (F5) to rate with the new form.");
        }
      } else if (!waiters.has(item.key)) {
        const what = item.kind === "skip" ? "Your skip of an earlier comparison" : "Your rating of an earlier comparison";
        showNotice(`${what} was not stored: ${errorText(data, status)}`, true);
      }
      waiters.get(item.key)?.({ status, data, pending: false });
      waiters.delete(item.key);
    }
    setStatus("");
    if (prefetchWanted && !prefetched && !prefetching) prefetch();
  } finally {
    draining = false;
  }
}
window.addEventListener("online", () => { backoffMs = 1000; drain(); });

// --- messages ---------------------------------------------------------------
function setStatus(text) { $("status").textContent = text; }
function showNotice(text, bad = false) {
  const n = $("notice");
  n.textContent = text;
  n.classList.toggle("bad", bad);
  n.hidden = false;
}
function clearNotice() { $("notice").hidden = true; $("notice").textContent = ""; }

// --- time on task: only while the page is visible ---------------------------
let visibleMs = 0;
let visibleSince = null;
function timeStart(comparisonId) {
  let saved = {};
  try { saved = JSON.parse(sessionStorage.getItem(TIME_KEY) || "{}"); } catch {}
  visibleMs = saved.comparison === comparisonId ? saved.ms : 0; // a reload keeps the time already spent
  visibleSince = document.visibilityState === "visible" ? performance.now() : null;
}
function timeNow() { return Math.round(visibleMs + (visibleSince === null ? 0 : performance.now() - visibleSince)); }
function timeSave() {
  if (current) sessionStorage.setItem(TIME_KEY, JSON.stringify({ comparison: current.data.comparison, ms: timeNow() }));
}
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    if (visibleSince === null) visibleSince = performance.now();
    renewIfDue(true);
  } else {
    if (visibleSince !== null) visibleMs += performance.now() - visibleSince;
    visibleSince = null;
    timeSave();
  }
});
window.addEventListener("pagehide", timeSave);

// --- leases -----------------------------------------------------------------
let current = null; // prepared comparison on screen
let prefetched = null; // prepared comparison leased behind it
let prefetching = null; // promise
let prefetchWanted = true; // false once the server said there is nothing more
let stoppedReason = null; // why the server gives no work (paused, daily limit, campaign paused), if it said
// The next API's error codes that mean "no work for you", with a reason to show.
const NO_WORK_ERRORS = new Set(["paused", "daily_limit", "campaign_paused", "campaign_archived"]);
let lastInput = Date.now();

for (const ev of ["keydown", "pointerdown", "wheel", "scroll", "input"]) {
  document.addEventListener(ev, () => { lastInput = Date.now(); }, { capture: true, passive: true });
}

async function renew(item) {
  try {
    const { status, data } = await api(`/api/comparisons/${item.data.comparison}/renew/`);
    if (status === 200) {
      item.leaseEnd = Date.parse(data.leased_until) - serverOffsetMs();
      item.leaseLost = false;
      return true;
    }
    if (status >= 400 && status < 500) {
      item.leaseLost = true;
      return false;
    }
  } catch {}
  return null; // network trouble: try again on the next tick
}

async function renewIfDue(force = false) {
  const active = Date.now() - lastInput < ACTIVE_WINDOW_MS && document.visibilityState === "visible";
  for (const item of [current, prefetched]) {
    if (!item || item.leaseLost) continue;
    const left = item.leaseEnd - Date.now();
    if ((active || force) && left < item.leaseTtl / 2) {
      const ok = await renew(item);
      if (ok === false && item === current) leaseLostNotice();
      if (ok === false && item === prefetched) { prefetched = null; prefetch(); }
    } else if (left <= 0 && item === current) {
      item.leaseLost = true;
      leaseLostNotice();
    }
  }
}
setInterval(renewIfDue, 10_000);

function leaseLostNotice() {
  showNotice(
    "Your hold on this comparison has expired, so it may have gone to someone else. " +
      "You can still submit: if the comparison still has room your rating counts, and if not you will be told before the next one.",
    true,
  );
}

// --- next comparison and prefetch -------------------------------------------
async function fetchNext(exclude) {
  const confirmedAtRequest = confirmed;
  const { status, data } = await api(`/api/campaigns/${config.campaign}/next/`, exclude.length ? { exclude } : {});
  if (status === 200) {
    base = { progress: data.progress, round_progress: data.round_progress, confirmedAtRequest };
    return { item: prepare(data) };
  }
  if (status === 204) return { none: true };
  // The server gives this annotator no work and says why (paused, daily
  // limit, campaign paused or archived): show that, not "nothing left".
  if (data && NO_WORK_ERRORS.has(data.error)) return { stopped: errorText(data, status), status };
  return { error: errorText(data, status), status };
}

// Until the server answers; a 409 means two leases are still held by submits
// in the outbox, so wait for it to drain and ask again.
async function fetchNextPatiently() {
  for (let attempt = 0; ; attempt++) {
    let r;
    try { r = await fetchNext(pendingIds()); } catch { r = { error: "network", status: 0 }; }
    if (r.stopped || (r.status !== 0 && r.status !== 409 && !(r.status >= 500))) return r;
    setStatus(r.status === 409 ? "Waiting for earlier submits to reach the server…" : "No answer from the server; trying again…");
    drain();
    await new Promise((res) => setTimeout(res, Math.min(500 * 2 ** attempt, 15_000)));
  }
}

function prefetch() {
  if (prefetching || prefetched || !prefetchWanted || !current) return prefetching;
  // A submit still in the outbox holds its lease until it lands, and two live
  // leases is the most the server gives: drain() calls this again when empty.
  if (outboxRead().length) { drain(); return null; }
  const exclude = [current.data.comparison, ...pendingIds()];
  prefetching = fetchNext(exclude)
    .then((r) => {
      if (r.item) prefetched = r.item;
      else if (r.none) prefetchWanted = false;
      else if (r.stopped) { prefetchWanted = false; stoppedReason = r.stopped; }
      // 409: two leases held (another tab?); ask again a little later.
      else if (r.status === 409) setTimeout(prefetch, 2000);
      return r;
    })
    .catch(() => ({ error: "network" }))
    .finally(() => { prefetching = null; renderCounters(); });
  return prefetching;
}

function resetForm() {
  form.reset();
  $("strength").disabled = true;
  aspects.reset();
}

function show(item) {
  current = item;
  const d = item.data;
  $("prompt").innerHTML = item.html.prompt;
  $("answer-a").innerHTML = item.html.a;
  $("answer-b").innerHTML = item.html.b;
  $("answer-a").scrollTop = 0;
  $("answer-b").scrollTop = 0;
  // A k-set shows its answers and the ranking controls instead of A/B.
  main.dataset.kind = d.answers ? "k-set" : "pair";
  if (d.answers) rank.show(item); else rank.hide();
  resetForm();
  demo.reset(d.comparison);
  $("comparison").hidden = false;
  $("done").hidden = true;
  main.dataset.state = "rating";
  main.dataset.comparison = d.comparison;
  document.title = `Rate #${d.comparison} · ${config.name} · Ratchet`;
  timeStart(d.comparison);
  renderCounters();
  if (item.leaseEnd <= Date.now() + 5_000) renewIfDue(true);
  const active = document.activeElement;
  if (!active || active === document.body || form.contains(active)) $("prompt-heading").focus({ preventScroll: true });
  window.scrollTo({ top: 0 });
}

let stopDone = null; // stops rate_done.js's polling

function showDone() {
  current = null;
  $("comparison").hidden = true;
  $("done").hidden = false;
  main.dataset.state = stoppedReason ? "stopped" : "done";
  if (stoppedReason) {
    $("done-heading").textContent = "No work for you here right now";
    $("done-text").textContent = stoppedReason;
  }
  delete main.dataset.comparison;
  $("done-heading").focus();
  // Real counts after a reload too; when done (not stopped), wait for the next round and rate it.
  stopDone?.();
  stopDone = watchDone({
    campaign: config.campaign,
    round: base?.round_progress?.round ?? null,
    poll: !stoppedReason,
    setCounters: (counts) => { base = { ...counts, confirmedAtRequest: confirmed }; renderCounters(); },
    // The new round's counts first: if it has nothing for us either, the next wait starts from it.
    onRoundOpen: (counts) => {
      base = { ...counts, confirmedAtRequest: confirmed };
      stopDone = null;
      prefetchWanted = true;
      main.dataset.state = "loading";
      start();
    },
  });
}

async function advance(t0) {
  // Nothing is "current" while we move on, so no prefetch starts meanwhile
  // and the comparison just left (still in the outbox) is never shown again.
  current = null;
  let next = prefetched;
  prefetched = null;
  while (!next && prefetchWanted) {
    main.dataset.state = "loading";
    if (prefetching) {
      await prefetching;
      next = prefetched;
      prefetched = null;
      continue;
    }
    setStatus("Loading the next comparison…");
    const r = await fetchNextPatiently();
    setStatus("");
    if (r.item) next = r.item;
    else if (r.none) prefetchWanted = false;
    else if (r.stopped) { prefetchWanted = false; stoppedReason = r.stopped; }
    else {
      showNotice(`Could not get the next comparison: ${r.error}`, true);
      return;
    }
  }
  if (!next) { showDone(); return; }
  show(next);
  if (t0 !== undefined) {
    // Painted: the frame after the DOM change.
    requestAnimationFrame(() => setTimeout(() => {
      window.__ratchetTimings.push(performance.now() - t0);
      main.dataset.timings = window.__ratchetTimings.length;
    }, 0));
  }
  prefetch();
}

// --- submit and skip ----------------------------------------------------------
let busy = false;

async function submit(t0 = performance.now()) {
  if (!current || busy || main.dataset.state !== "rating") return;
  const ranking = rank.active ? rank.value() : null;
  if (rank.active && !ranking) { showNotice(rank.missing()); return; }
  const choice = ranking ? "" : form.elements.choice.value;
  const strength = form.elements.strength.value;
  if (!ranking) { // a k-set's ranking has no choice, strength or better answer
    if (!choice) { showNotice("Pick an answer first: 1 A better, 2 B better, 3 tie, 4 both bad."); return; }
    if ((choice === "A" || choice === "B") && !strength) {
      showNotice(`How much better is ${choice}? q slightly, w clearly, e much.`);
      return;
    }
    if (aspects.missing()) return; // a required aspect without an answer: its row is armed, the notice says which
    if (demo.askFirst(current.data.comparison, choice)) return; // both bad: a better answer is asked for first
  }
  clearNotice();
  const item = current;
  const demonstration = ranking ? null : demo.payload(item.data.comparison, choice);
  const body = {
    comparison: item.data.comparison,
    ...(ranking ? { ranking } : { choice }),
    reason: $("reason").value,
    time_on_task_ms: timeNow(),
    idempotency_key: item.key,
    form: config.form, // the form this page was built from: if an admin changes it meanwhile, the rating is kept as made
  };
  if (choice === "A" || choice === "B") body.strength = Number(strength);
  if (demonstration) body.demonstration = demonstration;
  const judged = ranking ? null : aspects.payload(); // rankings have no aspects
  if (judged) body.aspects = judged;
  const entry = { kind: "rating", key: item.key, body };
  outboxAdd(entry);
  sessionStorage.removeItem(TIME_KEY);
  if (item.leaseLost || item.leaseEnd <= Date.now()) {
    // The lease is gone: wait for the server's word before moving on.
    busy = true;
    main.dataset.state = "sending";
    setStatus("Sending…");
    const result = await new Promise((resolve) => { waiters.set(entry.key, resolve); drain(); });
    busy = false;
    if (!result.pending && result.status >= 400) {
      const what = body.demonstration ? "Your choice and your better answer for this comparison are" : "Your choice for this comparison is";
      $("lost-text").textContent = `${errorText(result.data, result.status)} ${what} not counted.`;
      const dlg = $("lost-dialog");
      dlg.showModal();
      await new Promise((res) => dlg.addEventListener("close", res, { once: true }));
    }
    waiters.delete(entry.key);
    await advance();
    return;
  }
  drain();
  await advance(t0);
}

function skipDialog() {
  if (!current || main.dataset.state !== "rating") return;
  const dlg = $("skip-dialog");
  $("skip-form").reset();
  $("skip-error").textContent = "";
  dlg.returnValue = "";
  dlg.showModal();
  $("skip-form").querySelector("input[name=skip-reason]:checked").focus();
}

$("skip-dialog").addEventListener("close", () => {
  const dlg = $("skip-dialog");
  if (dlg.returnValue !== "skip" || !current) return;
  const f = $("skip-form");
  let reason = f.elements["skip-reason"].value;
  if (reason === "other") reason = f.elements["skip-other"].value.trim() || "Other (no detail given)";
  const item = current;
  outboxAdd({ kind: "skip", key: `skip-${item.data.comparison}`, comparison: item.data.comparison, reason });
  sessionStorage.removeItem(TIME_KEY);
  drain();
  advance(performance.now());
});

// --- the better-answer editor (rate_demo.js) -----------------------------------
const demo = demoEditor({
  mode: config.demonstrations || "off",
  storageKey: `ratchet.demo.v1.${config.user}.${config.campaign}`,
  answerText: (side) => (side === "a" ? current.data.response_a : current.data.response_b),
  submit: () => submit(),
  notice: showNotice,
});
$("demo-dialog").addEventListener("demo-closed", () => { if (current) demo.sync(current.data.comparison, form.elements.choice.value); });
$("open-demo")?.addEventListener("click", () => KEYS.d());

// --- the rubric aspects (rate_aspects.js) ----------------------------------------
// A pair's only: a k-set is ranked whole, without aspects (its rows are hidden).
const aspects = aspectRows({ aspects: config.aspects || [], required: !!config.aspects_required, notice: showNotice });

// --- a k-set's ranking (rate_rank.js) -------------------------------------------
const rank = rankingUi({ notice: showNotice });

// --- controls: buttons and keys do the same thing ----------------------------
function choose(value) {
  const radio = form.querySelector(`input[name=choice][value="${value}"]`);
  radio.checked = true;
  onChoice();
}
function onChoice() {
  const choice = form.elements.choice.value;
  const strengthOn = choice === "A" || choice === "B";
  $("strength").disabled = !strengthOn;
  if (!strengthOn) form.querySelectorAll("input[name=strength]").forEach((r) => { r.checked = false; });
  if (current) demo.sync(current.data.comparison, choice);
}
function strengthSet(value) {
  if ($("strength").disabled) {
    showNotice("Strength is for A or B: press 1 or 2 first.");
    return;
  }
  form.querySelector(`input[name=strength][value="${value}"]`).checked = true;
}
form.addEventListener("change", (e) => { if (e.target.name === "choice") onChoice(); });
form.addEventListener("submit", (e) => { e.preventDefault(); submit(e.timeStamp); });
$("skip").addEventListener("click", skipDialog);
$("open-instructions").addEventListener("click", () => $("instructions-dialog").showModal());
$("open-keys").addEventListener("click", () => $("keys-dialog").showModal());

const KEYS = {
  1: () => choose("A"), 2: () => choose("B"), 3: () => choose("tie"), 4: () => choose("both_bad"),
  q: () => strengthSet("1"), w: () => strengthSet("2"), e: () => strengthSet("3"),
  s: skipDialog,
  d: () => { if (current && demo.enabled && !rank.active) demo.open(current.data.comparison, form.elements.choice.value); },
  r: () => $("reason").focus(),
  i: () => $("instructions-dialog").showModal(),
  "?": () => $("keys-dialog").showModal(),
};

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
  const t = e.target;
  const openDialog = document.querySelector("dialog[open]");
  if (openDialog) {
    // Skip dialog: 1-4 pick a reason (unless typing the "other" one).
    if (openDialog.id === "skip-dialog" && /^[1-4]$/.test(e.key) && t.type !== "text") {
      const radios = openDialog.querySelectorAll("input[name=skip-reason]");
      radios[Number(e.key) - 1].checked = true;
      radios[Number(e.key) - 1].focus();
      if (e.key === "4") $("skip-other").focus();
      e.preventDefault();
    }
    return; // Esc closes, Enter submits the dialog's form: the browser does both
  }
  if (t.matches("textarea, input[type=text], select, [contenteditable]")) {
    if (e.key === "Enter" && !e.shiftKey && t.id === "reason") { e.preventDefault(); t.blur(); submit(e.timeStamp); }
    else if (e.key === "Escape") t.blur();
    return;
  }
  // A k-set: numbers, = and Backspace build the ranking (rate_rank.js).
  if (main.dataset.state === "rating" && rank.key(e)) { e.preventDefault(); return; }
  // A pair: an aspect's key arms its row; then 1-3 answer it (not the overall choice).
  if (main.dataset.state === "rating" && !rank.active && aspects.key(e.key)) {
    e.preventDefault();
    return;
  }
  if (e.key === "Enter") {
    if (t.matches("button, a, summary")) return; // the focused control's own action
    e.preventDefault();
    submit(e.timeStamp);
    return;
  }
  const action = KEYS[e.key] ?? KEYS[e.key.toLowerCase?.()];
  if (action && main.dataset.state !== "loading") {
    e.preventDefault();
    action();
  }
});

// --- start --------------------------------------------------------------------
$("instructions").innerHTML = config.instructions ? markdown(config.instructions) : "<p>This campaign has no instructions.</p>";

async function start() {
  drain();
  const r = await fetchNextPatiently();
  setStatus("");
  if (r.item) { show(r.item); prefetch(); }
  else if (r.none) { prefetchWanted = false; showDone(); renderCounters(); }
  else if (r.stopped) { prefetchWanted = false; stoppedReason = r.stopped; showDone(); renderCounters(); }
  else showNotice(`Could not get a comparison: ${r.error}`, true);
}

// DOMPurify (markdown.js) loads as a classic deferred script; it has run before this module.
start();
