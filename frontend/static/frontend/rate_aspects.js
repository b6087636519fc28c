// The rubric aspects of the rating page (docs/annotators.md, "Aspects"): a
// row per aspect under the overall choice, its question and A / B / same.
// Keyboard first: the aspect's key arms its row (it is outlined and says
// "now 1 / 2 / 3"), then 1, 2 or 3 answers it and disarms; Esc, or the same
// key again, disarms without answering. While a row is armed, 1-3 answer the
// aspect, not the overall choice. The rows are in the page's form (the
// template renders them), so a mouse or Tab + arrows work too. Nothing is
// sent from here: the judgments ride in the rating's body (rate.js), so the
// outbox keeps them with the rating.
//
// Campaign settings (config.aspects, config.aspects_required): the aspects
// [{name, question, key}]; required = the submit waits until every row has
// an answer.

const VALUES = { 1: "A", 2: "B", 3: "same" };

export function aspectRows({ aspects, required, notice }) {
  const $ = (id) => document.getElementById(id);
  const byKey = new Map(aspects.map((a) => [a.key, a]));
  let armed = null; // the aspect whose key was pressed last, waiting for 1-3

  const row = (name) => document.querySelector(`.aspect-row[data-aspect="${CSS.escape(name)}"]`);
  const value = (name) => document.querySelector(`input[name="aspect-${CSS.escape(name)}"]:checked`)?.value || "";

  function arm(aspect) {
    if (armed) row(armed.name)?.classList.remove("armed");
    armed = aspect;
    if (aspect) row(aspect.name)?.classList.add("armed");
    const hint = $("aspect-hint");
    if (hint) hint.textContent = aspect ? `${aspect.question} Now 1 A better, 2 B better, 3 same (Esc: cancel).` : "";
  }

  function answer(aspect, choice) {
    const radio = document.querySelector(`input[name="aspect-${CSS.escape(aspect.name)}"][value="${choice}"]`);
    if (radio) radio.checked = true;
  }

  // A key press on the page (outside text fields and dialogs): true if it
  // was an aspect's (its key, or 1-3 / Esc while a row is armed).
  function key(k) {
    if (armed) {
      if (k in VALUES) { answer(armed, VALUES[k]); arm(null); return true; }
      if (k === "Escape") { arm(null); return true; }
    }
    const aspect = byKey.get(k) || byKey.get(k.toLowerCase?.());
    if (!aspect) return false;
    arm(armed === aspect ? null : aspect);
    return true;
  }

  // {name: "A" | "B" | "same"} of the rows answered, or null for none.
  function payload() {
    const out = {};
    for (const a of aspects) { const v = value(a.name); if (v) out[a.name] = v; }
    return Object.keys(out).length ? out : null;
  }

  // Before a submit: with required aspects, what is still missing (a
  // sentence, and the first missing row armed), or "" when it may go.
  function missing() {
    if (!required) return "";
    const left = aspects.filter((a) => !value(a.name));
    if (!left.length) return "";
    arm(left[0]);
    notice(`Every aspect needs an answer; missing: ${left.map((a) => `${a.name} (${a.key})`).join(", ")}. ` +
      "Press its key, then 1 A, 2 B or 3 same.");
    return left.map((a) => a.name).join(", ");
  }

  // A comparison shown: the form's reset cleared the radios; clear the armed row too.
  function reset() { arm(null); }

  return { key, payload, missing, reset, armed: () => armed, enabled: aspects.length > 0 };
}
