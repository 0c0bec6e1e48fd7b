// Send the CSV with a progress bar: a large file takes a while to upload before the import
// starts. Without this script the form posts as usual.
(function () {
  function enhance() {
    const form = document.getElementById("import-form");
    if (!form || !window.FormData) return;
    const status = document.getElementById("upload-status");
    const bar = document.getElementById("upload-progress");
    const label = document.getElementById("upload-label");
    const button = form.querySelector("button[type=submit]");

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        const percent = Math.round((100 * e.loaded) / e.total);
        bar.value = percent;
        label.textContent = percent < 100 ? `Uploading… ${percent}%` : "Checking the file…";
      });
      xhr.addEventListener("load", () => {
        // A valid upload redirects to the import's own page; follow it there.
        const landed = new URL(xhr.responseURL || form.action, window.location.href);
        if (landed.pathname !== new URL(form.action, window.location.href).pathname) {
          window.location.assign(landed.href);
          return;
        }
        // Otherwise the page came back with the form's errors: show them in place.
        const page = new DOMParser().parseFromString(xhr.responseText, "text/html");
        const main = page.querySelector("main");
        if (xhr.status === 200 && main) {
          document.querySelector("main").replaceWith(main);
          enhance();
          return;
        }
        label.textContent = `The upload failed (error ${xhr.status}).`;
        button.disabled = false;
      });
      xhr.addEventListener("error", () => {
        label.textContent = "The upload failed. Check your connection and try again.";
        button.disabled = false;
      });
      status.hidden = false;
      bar.value = 0;
      label.textContent = "Uploading…";
      button.disabled = true;
      xhr.send(new FormData(form));
    });
  }
  enhance();
})();
