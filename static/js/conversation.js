// Live character counter for the reply box, against the platform's limit.
(function () {
  const box = document.getElementById("id_reply");
  const counter = document.getElementById("reply-counter");
  if (!box || !counter || !box.dataset.limit) return;
  const limit = Number(box.dataset.limit);
  const update = () => {
    const n = box.value.length;
    counter.textContent = n + " / " + limit;
    counter.classList.toggle("over", n > limit);
  };
  box.addEventListener("input", update);
  update();
})();
