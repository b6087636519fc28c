// Talking to Ratchet's JSON API from a page: POST with the session's CSRF
// token, the answer's status and parsed body, and the server's clock (leases
// end by the server's clock, not the browser's).

let offsetMs = 0; // server clock - local clock, from the latest answer's Date header

export function serverOffsetMs() { return offsetMs; }

export async function api(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  const date = Date.parse(resp.headers.get("Date") || "");
  if (!Number.isNaN(date)) offsetMs = date - Date.now();
  let data = null;
  if (resp.status !== 204) {
    try { data = await resp.json(); } catch { data = null; }
  }
  return { status: resp.status, data };
}

// What to tell a person about an error answer: the API's {"error", "detail"} (annotate/apis/errors.py).
export function errorText(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && typeof data === "object") return Object.entries(data).map(([k, v]) => `${k}: ${v}`).join("; ");
  return `the server answered ${status}`;
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// An idempotency key; crypto.randomUUID needs a secure context, which plain-http hosts are not.
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}
