// Console campaign pages: the instructions' live markdown preview (rendered
// as the rating page renders them: markdown.js) and a confirm step
// on forms that cannot be undone (data-confirm); a new campaign's loop
// settings hidden while its kind is "evaluation".
import { markdown } from "./markdown.js";

const source = document.getElementById("id_instructions");
const preview = document.getElementById("instructions-preview");
if (source && preview) {
  let pending = 0;
  const render = () => {
    pending = 0;
    preview.innerHTML = source.value.trim() ? markdown(source.value) : '<p class="muted">The preview shows here.</p>';
    preview.dataset.rendered = String(Number(preview.dataset.rendered || 0) + 1);
  };
  // One render per frame however fast the typing.
  source.addEventListener("input", () => { if (!pending) pending = requestAnimationFrame(render); });
  render();
}

for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
}

// A new campaign's training settings matter to loop campaigns only: hidden
// while "evaluation" is chosen (the server ignores them for one).
const kind = document.getElementById("id_kind");
const loopSettings = document.querySelector("fieldset.loop-settings");
if (kind && loopSettings) {
  const show = () => { loopSettings.hidden = kind.value === "evaluation"; };
  kind.addEventListener("change", show);
  show();
}

// The settings form's helpers: a model already in the store chosen from
// the list fills the base model; "Use these" fills the training settings
// with ones that suit a CPU.
const baseModel = document.getElementById("id_base_model");
for (const button of document.querySelectorAll("button[data-base-model]")) {
  button.addEventListener("click", () => { if (baseModel && !baseModel.readOnly) baseModel.value = button.dataset.baseModel; });
}
const cpu = document.getElementById("use-cpu-settings");
const trainingConfig = document.getElementById("id_training_config");
if (cpu && trainingConfig) {
  cpu.addEventListener("click", () => { trainingConfig.value = document.getElementById("cpu-settings-json").textContent; });
}

// The overview's Settings section is folded; its link (or a #settings URL) unfolds it.
const settings = document.querySelector("details#settings");
if (settings) {
  const unfold = () => { if (location.hash === "#settings") settings.open = true; };
  window.addEventListener("hashchange", unfold);
  unfold();
}
