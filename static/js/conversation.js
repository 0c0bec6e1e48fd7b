// The conversation page: reply counter, canned responses, assignment confirmation, presence
// of colleagues, and keyboard shortcuts. Everything here is an enhancement: the forms work
// without it.
(function () {
  const reply = document.getElementById("id_reply");
  const note = document.getElementById("id_note");
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]");

  // Live character count against the platform's limit.
  const counter = document.getElementById("reply-counter");
  if (reply && counter && reply.dataset.limit) {
    const limit = Number(reply.dataset.limit);
    const update = () => {
      const n = reply.value.length;
      counter.textContent = n + " / " + limit;
      counter.classList.toggle("over", n > limit);
    };
    reply.addEventListener("input", update);
    update();
  }

  // Canned responses: fetched filled in for this conversation, inserted at the cursor.
  const canned = document.getElementById("id_canned");
  if (canned && reply) {
    canned.addEventListener("change", async () => {
      if (!canned.value) return;
      const url = canned.dataset.urlTemplate.replace(/0\/$/, canned.value + "/");
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.ok) {
        const text = await response.text();
        const at = reply.selectionStart ?? reply.value.length;
        reply.value = reply.value.slice(0, at) + text + reply.value.slice(reply.selectionEnd ?? at);
        reply.dispatchEvent(new Event("input"));
        reply.focus();
      }
      canned.value = "";
    });
  }

  // Replying over a colleague's assignment asks first.
  const form = document.getElementById("reply-form");
  if (form && form.dataset.assignee) {
    form.addEventListener("submit", (event) => {
      const ok = window.confirm(form.dataset.assignee + " is assigned to this conversation. Reply anyway?");
      if (!ok) { event.preventDefault(); return; }
      document.getElementById("id_confirm_not_assignee").value = "1";
    });
  }

  // Presence: report every 5 s (typing if a key was pressed since), show who else is here.
  const presence = document.getElementById("presence");
  let lastKey = 0;
  [reply, note].forEach((box) => box && box.addEventListener("input", () => { lastKey = Date.now(); }));
  async function report() {
    if (!presence || !csrf) return;
    const body = new URLSearchParams({ typing: Date.now() - lastKey < 5000 ? "1" : "0" });
    try {
      const response = await fetch(presence.dataset.url, {
        method: "POST", body, credentials: "same-origin",
        headers: { "X-CSRFToken": csrf.value },
      });
      if (response.ok) presence.innerHTML = await response.text();
    } catch (error) { /* offline for a moment: try again at the next tick */ }
  }
  report();
  setInterval(report, 5000);

  // Shortcuts: r reply, n note, a assign to me, e resolve (not while typing in a field).
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    const key = event.key.toLowerCase();
    if (key === "r" && reply) { event.preventDefault(); reply.focus(); }
    else if (key === "n" && note) { event.preventDefault(); note.focus(); }
    else {
      const button = document.querySelector(`[data-shortcut="${key}"]`);
      if (button) { event.preventDefault(); button.click(); }
    }
  });
})();
