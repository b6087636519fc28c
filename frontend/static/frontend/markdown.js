// Markdown as every page shows it (answers and prompts on the rating page,
// the instructions and their preview in the console): marked, then
// DOMPurify, which the page loads as a classic deferred script before any
// module runs.
import { marked } from "./vendor/marked-18.2.1.esm.js";

export function markdown(text) {
  const html = marked.parse(text || "", { gfm: true, breaks: false, async: false });
  return window.DOMPurify.sanitize(html, {
    // No requests to other hosts from model output, nothing that looks like a control.
    FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio"],
    FORBID_ATTR: ["style"],
  });
}
