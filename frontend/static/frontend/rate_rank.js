// Ranking a k-set (k = 3 or 4 answers) on the rating page, keyboard first.
//
// Keys: an answer's number puts it next, below everything ranked so far
// (best first); "=" before a number ties it with the answer placed just
// before (joins its group); Backspace takes back the last placement (or a
// pending "="). With one answer left, Enter places it last and submits.
// The order being built is shown, and read out (aria-live), as
// "3 > 1 = 4 > 2". Buttons do the same for a mouse or a finger.
//
// The ranking sent is tie groups of display positions, best first:
// [[3], [1, 4], [2]] (docs/api.md). rate.js owns everything else (leases,
// the outbox, submit); it asks this module for the panes and the value.
export function rankingUi({ notice }) {
  const $ = (id) => document.getElementById(id);
  const panes = $("k-answers");
  const controls = $("rank-controls");
  const orderText = $("rank-order");
  const buttons = $("rank-buttons");
  let k = 0;
  let groups = []; // [[position, ...], ...] best first
  let tiePending = false;

  const placed = () => groups.flat();
  const left = () => Array.from({ length: k }, (_, i) => i + 1).filter((p) => !placed().includes(p));

  function render() {
    const shown = groups.map((g) => g.join(" = ")).join(" > ");
    orderText.textContent = shown ? shown + (tiePending ? " = …" : "") : tiePending ? "= …" : "nothing yet";
    orderText.dataset.ranking = JSON.stringify(groups);
    const rest = left();
    $("rank-left").textContent = rest.length ? `Still to place: ${rest.join(", ")}` : "All placed: Enter submits.";
    for (const button of buttons.querySelectorAll("button[data-position]")) {
      const p = Number(button.dataset.position);
      button.disabled = placed().includes(p);
    }
    $("rank-tie").setAttribute("aria-pressed", String(tiePending));
    // Each answer's heading says its place so far.
    for (let p = 1; p <= k; p++) {
      const at = groups.findIndex((g) => g.includes(p));
      const badge = $(`k-answer-${p}-place`);
      if (badge) badge.textContent = at < 0 ? "" : `ranked ${at + 1}${groups[at].length > 1 ? " (tied)" : ""}`;
    }
  }

  function place(p) {
    if (p < 1 || p > k) { notice(`This set has answers 1 to ${k}.`); return; }
    if (placed().includes(p)) { notice(`Answer ${p} is placed already; Backspace takes back the last one.`); return; }
    if (tiePending && groups.length) groups[groups.length - 1].push(p);
    else groups.push([p]);
    tiePending = false;
    render();
  }

  function tie() {
    if (!groups.length) { notice("Place an answer first; = then a number ties the next one with it."); return; }
    if (!left().length) return;
    tiePending = !tiePending;
    render();
  }

  function undo() {
    if (tiePending) tiePending = false;
    else if (groups.length) {
      const last = groups[groups.length - 1];
      last.pop();
      if (!last.length) groups.pop();
    }
    render();
  }

  function show(item) {
    const answers = item.data.answers;
    k = answers.length;
    groups = [];
    tiePending = false;
    panes.style.setProperty("--k", String(k));
    panes.innerHTML = item.html.answers
      .map(
        (html, i) => `<section class="answer" aria-labelledby="k-answer-${i + 1}-heading">
  <h2 id="k-answer-${i + 1}-heading">Answer ${i + 1} <span class="rank-place" id="k-answer-${i + 1}-place"></span></h2>
  <div class="md scroll" tabindex="0" role="region" aria-label="Answer ${i + 1}, scrollable">${html}</div>
</section>`,
      )
      .join("");
    buttons.innerHTML = answers
      .map((_, i) => `<button type="button" data-position="${i + 1}" aria-keyshortcuts="${i + 1}">Answer ${i + 1} next <kbd>${i + 1}</kbd></button>`)
      .join("");
    panes.hidden = false;
    controls.hidden = false;
    render();
  }

  function hide() {
    k = 0;
    panes.hidden = true;
    panes.innerHTML = "";
    controls.hidden = true;
  }

  buttons.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-position]");
    if (button) place(Number(button.dataset.position));
  });
  $("rank-tie").addEventListener("click", tie);
  $("rank-undo").addEventListener("click", undo);

  return {
    show,
    hide,
    get active() { return k > 0; },
    // The ranking to send, or null if answers are still unplaced. One left
    // is placed last (there is nowhere else for it to go).
    value() {
      const rest = left();
      if (rest.length === 1) { place(rest[0]); }
      return left().length ? null : groups.map((g) => [...g]);
    },
    missing() {
      return `Rank every answer before submitting: press the answers' numbers best first (= ties). Still to place: ${left().join(", ")}.`;
    },
    // A key press while a k-set is on screen: true if it was ours.
    key(e) {
      if (!k) return false;
      if (/^[1-9]$/.test(e.key) && Number(e.key) <= k) { place(Number(e.key)); return true; }
      if (e.key === "=") { tie(); return true; }
      if (e.key === "Backspace") { undo(); return true; }
      return false;
    },
  };
}
