// Editable rows of the routing settings (a rule's conditions and actions, a path's levels, a
// calendar's holidays): add rows from a <template>, remove and reorder them, and swap a row's
// operator options and value widget when its field or action type changes. The server reads
// the rows in page order, so their indexes only need to be unique.
(function () {
  const operatorsScript = document.getElementById("condition-operators");
  const operators = operatorsScript ? JSON.parse(operatorsScript.textContent) : {};

  function fromTemplate(template, index) {
    const holder = document.createElement("template");
    holder.innerHTML = template.innerHTML.replaceAll("__index__", String(index));
    return holder.content;
  }

  function showScriptedControls(root) {
    root.querySelectorAll("[data-js-only]").forEach((element) => {
      element.hidden = false;
    });
  }

  function setUpRows(group) {
    const list = group.querySelector("[data-row-list]");
    const rowTemplate = group.querySelector("template[data-row-template]");
    const emptyHint = group.querySelector("[data-empty-hint]");
    const addButton = group.querySelector("[data-add-row]");
    let next = Number(group.dataset.nextIndex || list.children.length);

    const refresh = () => {
      list.hidden = list.children.length === 0;
      if (emptyHint) emptyHint.hidden = list.children.length > 0;
    };

    const add = () => {
      const fragment = fromTemplate(rowTemplate, next++);
      const row = fragment.firstElementChild;
      list.append(fragment);
      showScriptedControls(row);
      refresh();
      const first = row.querySelector("select, input, textarea");
      if (first) first.focus();
    };

    const remove = (row) => {
      const after = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      refresh();
      const target = after ? after.querySelector("select, input, textarea") : addButton;
      if (target) target.focus();
    };

    const move = (row, direction, button) => {
      if (direction === "up" && row.previousElementSibling) {
        list.insertBefore(row, row.previousElementSibling);
      } else if (direction === "down" && row.nextElementSibling) {
        list.insertBefore(row.nextElementSibling, row);
      }
      button.focus();
    };

    const swap = (row, kind) => {
      const index = row.dataset.index;
      const template = group.querySelector(`template[data-value-for="${CSS.escape(kind)}"]`);
      const cell = row.querySelector("[data-value]");
      if (cell) cell.replaceChildren(template ? fromTemplate(template, index) : "");
      const operatorSelect = row.querySelector("[data-op-select]");
      if (operatorSelect) {
        operatorSelect.replaceChildren(
          ...(operators[kind] || []).map(([value, label]) => new Option(label, value)),
        );
      }
      row.classList.remove("invalid");
      row.querySelectorAll(".row-errors").forEach((errors) => errors.remove());
    };

    group.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (!button || !group.contains(button)) return;
      const row = button.closest("[data-row]");
      if (button.matches("[data-add-row]")) add();
      else if (row && button.matches("[data-remove-row]")) remove(row);
      else if (row && button.matches("[data-move-row]")) move(row, button.dataset.moveRow, button);
    });
    group.addEventListener("change", (event) => {
      const select = event.target.closest("[data-kind-select]");
      if (select) swap(select.closest("[data-row]"), select.value);
    });
    showScriptedControls(group);
    refresh();
  }

  // Fields that matter only for one choice of a radio group: data-shown-when="delivery=email".
  function setUpConditionalFields(form) {
    const dependants = form.querySelectorAll("[data-shown-when]");
    if (!dependants.length) return;
    const update = () => {
      dependants.forEach((element) => {
        const [name, value] = element.dataset.shownWhen.split("=");
        const chosen = form.querySelector(`input[name="${CSS.escape(name)}"]:checked`);
        element.hidden = chosen ? chosen.value !== value : false;
      });
    };
    form.addEventListener("change", update);
    update();
  }

  document.querySelectorAll("[data-rows]").forEach(setUpRows);
  document.querySelectorAll("form").forEach(setUpConditionalFields);
  const problems = document.getElementById("form-problems");
  if (problems) problems.focus();
})();
