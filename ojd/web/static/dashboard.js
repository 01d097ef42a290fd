// oj's dashboard: live updates over server-sent events, relative times, and the actions.
// No framework: the server renders the HTML, this swaps it in.
"use strict";
(function () {
  const live = document.getElementById("live");
  const conn = document.getElementById("conn");
  const notice = document.getElementById("notice");
  const tokenState = document.getElementById("token-state");

  // ?token=... on the page's URL: kept for this tab's actions, then taken out of the URL
  // (so it does not stay in the address bar, the history or a screenshot)
  const url = new URL(window.location.href);
  if (url.searchParams.has("token")) {
    sessionStorage.setItem("oj-token", url.searchParams.get("token"));
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  const token = () => sessionStorage.getItem("oj-token");
  tokenState.textContent = token() ? "actions on" : "read-only (open with ?token=…)";

  function ago(ts) {
    const s = Math.round(Date.now() / 1000 - ts);
    const a = Math.abs(s);
    const text = a < 60 ? a + "s" : a < 3600 ? Math.floor(a / 60) + "m" :
      a < 86400 ? Math.floor(a / 3600) + "h" : Math.floor(a / 86400) + "d";
    return s >= 0 ? text + " ago" : "in " + text;
  }
  function times() {
    for (const t of live.querySelectorAll("time[data-ts]")) {
      t.textContent = ago(parseFloat(t.dataset.ts));
    }
  }

  // an update that arrives while someone types an answer waits until they leave the field
  let pending = null;
  function show(html) {
    const typing = document.activeElement && live.contains(document.activeElement) &&
      document.activeElement.tagName === "INPUT";
    if (typing) { pending = html; return; }
    live.innerHTML = html;
    times();
  }
  live.addEventListener("focusout", () => {
    setTimeout(() => { if (pending !== null) { const h = pending; pending = null; show(h); } }, 0);
  });

  function connect() {
    const source = new EventSource(live.dataset.stream);
    source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn on"; });
    source.addEventListener("update", (ev) => show(ev.data));
    source.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn off"; });
  }

  function say(text, ok) {
    notice.textContent = text;
    notice.className = ok ? "ok" : "err";
  }

  async function act(path, body) {
    const headers = { "Content-Type": "application/json" };
    if (token()) headers["Authorization"] = "Bearer " + token();
    try {
      const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body || {}) });
      const answer = await r.json();
      say(answer.message, answer.ok);
    } catch (err) {
      say("the server did not answer: " + err, false);
    }
  }

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    if (b.dataset.action === "cancel") {
      if (!confirm("Cancel job " + b.dataset.job + "?")) return;
      act("/api/jobs/" + encodeURIComponent(b.dataset.job) + "/cancel");
    } else if (b.dataset.action === "retry") {
      act("/api/items/" + encodeURIComponent(b.dataset.item) + "/retry");
    }
  });
  document.addEventListener("submit", (ev) => {
    const d = ev.target.closest("form[data-action=resolve]");
    if (d) {  // a decision's option: the button pressed says which
      ev.preventDefault();
      const b = ev.submitter;
      const message = d.elements.message.value.trim();
      if (b && b.dataset.needsMessage && !message) {
        say("option " + b.value + " needs a message: type it first", false);
        d.elements.message.focus();
        return;
      }
      act("/api/decisions/" + encodeURIComponent(d.dataset.decision) + "/resolve",
          { option: b ? parseInt(b.value, 10) : null, message: message || null });
      return;
    }
    const f = ev.target.closest("form[data-action=answer]");
    if (!f) return;
    ev.preventDefault();
    act("/api/jobs/" + encodeURIComponent(f.dataset.job) + "/answer",
        { message: f.elements.message.value });
    f.reset();
  });

  times();
  setInterval(times, 1000);
  connect();
})();
