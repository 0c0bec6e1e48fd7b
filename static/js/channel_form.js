// Show only the credential fields of the platform chosen.
(function () {
  const platform = document.getElementById("id_platform");
  if (!platform) return;
  const update = () => {
    document.querySelectorAll("fieldset.secrets").forEach((set) => {
      set.hidden = set.dataset.platform !== platform.value;
    });
  };
  platform.addEventListener("change", update);
  update();
})();
