// Markdown as every page shows it (answers and prompts on the rating page,
// the instructions and their preview in the console): marked, then
// DOMPurify, which the page loads as a classic deferred script before any
// module runs.
import { Marked } from "./vendor/marked-18.2.1.esm.js";

const OPTIONS = { gfm: true, breaks: false, async: false };
const escape = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

// Admins write the instructions: their HTML (a <details>, say) is kept, then sanitised.
const authored = new Marked(OPTIONS);
// Prompts and answers are data, not markup: raw HTML in them is shown as the
// text it is (DOMPurify would drop a <script> and leave an empty box), while
// their markdown still renders. A block of HTML keeps its line breaks.
const literal = new Marked(OPTIONS, {
  renderer: {
    html({ text, block }) {
      return block ? `<p class="raw-html">${escape(text.replace(/\n+$/, ""))}</p>\n` : escape(text);
    },
  },
});

function sanitize(html) {
  return window.DOMPurify.sanitize(html, {
    // No requests to other hosts from model output, nothing that looks like a control.
    FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio"],
    FORBID_ATTR: ["style"],
  });
}

export function markdown(text) {
  return sanitize(authored.parse(text || ""));
}

// A prompt or an answer: markdown, with any raw HTML shown literally.
export function markdownText(text) {
  return sanitize(literal.parse(text || ""));
}
