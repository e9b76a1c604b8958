// Inkwell's export pages: while an export is being prepared, ask its status every second and show
// how far it has got; once it is ready, show its download link. Without JavaScript a reload does.
(function () {
  "use strict";

  var POLL_MS = 1000;

  function sizeText(bytes) {
    if (bytes >= 1048576) return (bytes / 1048576).toFixed(1) + " MB";
    if (bytes >= 1024) return Math.round(bytes / 1024) + " KB";
    return bytes + " bytes";
  }

  function show(row, data) {
    var pill = row.querySelector("[data-export-status]");
    pill.textContent = data.status_display;
    pill.className = "status-pill status-" + data.status;

    var bar = row.querySelector("[data-export-progress]");
    var count = row.querySelector("[data-export-count]");
    if (data.status === "ready") {
      bar.max = 1;
      bar.value = 1;
    } else if (data.progress_total > 0) {
      bar.max = data.progress_total;
      bar.value = data.progress_done;
    }
    if (data.progress_total > 0) {
      count.textContent = data.progress_done.toLocaleString() + " of " + data.progress_total.toLocaleString() + " rows";
    }

    var error = row.querySelector("[data-export-error]");
    error.textContent = data.error;
    error.hidden = !data.error;

    var link = row.querySelector("[data-export-download]");
    if (data.download_url) {
      link.href = data.download_url;
      link.textContent = "Download (" + sizeText(data.archive_bytes) + ")";
      link.hidden = false;
    }
  }

  function finished() {
    // The form may ask for another export once none is being prepared.
    if (document.querySelector("tr[data-status-url]")) return;
    var button = document.querySelector("[data-testid=export-request-form] button");
    if (button && button.disabled) {
      button.disabled = false;
      button.textContent = "Prepare an export";
    }
  }

  function poll(row) {
    fetch(row.getAttribute("data-status-url"), {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (data) {
        show(row, data);
        if (data.status === "queued" || data.status === "running") {
          setTimeout(function () { poll(row); }, POLL_MS);
        } else {
          row.removeAttribute("data-status-url");
          finished();
        }
      })
      .catch(function () {
        // A blip (a deploy, a lost connection): try again a little later.
        setTimeout(function () { poll(row); }, POLL_MS * 5);
      });
  }

  document.querySelectorAll("tr[data-status-url]").forEach(poll);
})();
