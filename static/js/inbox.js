// The inbox: select all rows for bulk actions, and show the bulk bar's tag box only when
// "Add tag" is chosen. The list itself never reorders under the agent: new activity is
// announced at the top (htmx polling) and shown on request.
(function () {
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", () => {
      document.querySelectorAll(".row-check").forEach((box) => { box.checked = all.checked; });
    });
  }
  const action = document.getElementById("bulk-action");
  const tag = document.getElementById("bulk-tag");
  if (action && tag) {
    const update = () => { tag.hidden = action.value !== "tag"; };
    action.addEventListener("change", update);
    update();
  }
})();
