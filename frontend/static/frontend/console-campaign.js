// Console campaign pages: the instructions' live markdown preview (rendered
// as the rating page renders them: markdown.js) and a confirm step
// on forms that cannot be undone (data-confirm).
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
