// The better-answer editor of the rating page (a demonstration: see
// docs/annotators.md). After choosing, `d` opens it: prefilled with the
// chosen answer (A or B), empty on "both bad". Ctrl+Enter (Cmd+Enter)
// submits the rating with it; Esc closes it and keeps the draft, which then
// goes with the rating when it is submitted (the line under the form says
// so). Nothing is sent from here: the draft rides in the rating's body, so
// the outbox keeps it until the server has both (rate.js). Before that the
// draft is kept in sessionStorage, so a reload of the same comparison finds it.
//
// Campaign setting (config.demonstrations): "off" = no editor; "optional" =
// after A, B or both bad; "both_bad" = only on both bad, and submitting a
// both-bad rating opens the editor once first (asked for; Esc, then Enter
// submits without one).
import { markdownText } from "./markdown.js";

const ORIGIN = { A: "a", B: "b", both_bad: "" };

export function demoEditor({ mode, storageKey, answerText, submit, notice }) {
  const $ = (id) => document.getElementById(id);
  const dlg = $("demo-dialog");
  const text = $("demo-text");
  const preview = $("demo-preview");
  const attached = $("demo-attached");
  let draft = null; // {comparison, origin, base, text, ms}
  let openedAt = null;
  let asked = null; // the comparison the editor was already asked for (both_bad mode)

  const save = () => {
    try { draft ? sessionStorage.setItem(storageKey, JSON.stringify(draft)) : sessionStorage.removeItem(storageKey); } catch {}
  };
  const load = () => {
    try { return JSON.parse(sessionStorage.getItem(storageKey) || "null"); } catch { return null; }
  };

  const allowed = (choice) =>
    mode === "optional" ? choice in ORIGIN : mode === "both_bad" ? choice === "both_bad" : false;

  function renderPreview() {
    preview.innerHTML = text.value.trim() ? markdownText(text.value) : '<p class="muted">The preview shows here.</p>';
  }
  let previewQueued = false;
  text.addEventListener("input", () => {
    if (previewQueued) return;
    previewQueued = true;
    requestAnimationFrame(() => {
      previewQueued = false;
      renderPreview();
      if (draft) { draft.text = text.value; save(); }
    });
  });

  // What goes with the rating: a draft for this comparison and choice that
  // says something (not empty, not the answer it started from unchanged).
  function payload(comparison, choice) {
    if (!draft || draft.comparison !== comparison || draft.origin !== ORIGIN[choice]) return null;
    if (!draft.text.trim() || draft.text === draft.base) return null;
    return { text: draft.text, origin: draft.origin, time_on_task_ms: Math.round(draft.ms) };
  }

  function sync(comparison, choice) {
    const p = payload(comparison, choice);
    attached.hidden = !p;
    if (p) attached.textContent = `Your better answer (${p.text.length} characters) goes with this rating. d edits it.`;
  }

  function open(comparison, choice) {
    if (mode === "off") return false;
    if (!allowed(choice)) {
      notice(mode === "both_bad"
        ? "This campaign asks for a better answer only when both are bad (4)."
        : "Choose A, B or both bad first (1, 2 or 4); then d writes the better answer.");
      return false;
    }
    const origin = ORIGIN[choice];
    if (!draft || draft.comparison !== comparison || draft.origin !== origin) {
      const base = origin ? answerText(origin) : "";
      draft = { comparison, origin, base, text: base, ms: 0 };
    }
    $("demo-title").textContent = origin ? `Edit answer ${origin.toUpperCase()} into a better one` : "Write a better answer";
    text.value = draft.text;
    renderPreview();
    openedAt = performance.now();
    dlg.showModal();
    text.focus();
    text.setSelectionRange(text.value.length, text.value.length);
    return true;
  }

  // The draft as the editor holds it (the close event comes a task later
  // than close(), too late for a submit made at once).
  function keep() {
    if (draft && openedAt !== null) {
      draft.text = text.value;
      draft.ms += performance.now() - openedAt;
    }
    openedAt = null;
    save();
  }
  function close() {
    if (dlg.open) dlg.close();
  }
  dlg.addEventListener("close", () => {
    keep();
    dlg.dispatchEvent(new CustomEvent("demo-closed"));
  });

  function send() {
    keep();
    close();
    submit();
  }
  dlg.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); send(); }
  });
  $("demo-send").addEventListener("click", send);
  $("demo-cancel").addEventListener("click", close);

  // Before a submit: in both_bad mode, a both-bad rating with nothing written
  // opens the editor once (true: the submit waits for it).
  function askFirst(comparison, choice) {
    if (mode !== "both_bad" || choice !== "both_bad" || asked === comparison) return false;
    if (payload(comparison, choice)) return false;
    asked = comparison;
    return open(comparison, choice);
  }

  // A comparison shown: its own draft (after a reload) is kept, any other dropped.
  function reset(comparison) {
    const kept = load();
    draft = kept && kept.comparison === comparison ? kept : null;
    if (!draft) save();
    attached.hidden = true;
  }

  return { open, payload, sync, askFirst, reset, enabled: mode !== "off" };
}
