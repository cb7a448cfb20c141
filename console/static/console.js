// Console behaviour without inline scripts (CSP script-src 'self'): poll the status of long
// operations — report generation, an iPad's enrollment or erase, queued commands — and update the page.
(function () {
  "use strict";
  var INTERVAL_MS = 2000, MAX_POLLS = 450; // stop after 15 minutes; a reload resumes

  function poll(url, onData, isDone) {
    var count = 0;
    function tick() {
      count += 1;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data === null) { return; }
          onData(data);
          if (!isDone(data) && count < MAX_POLLS) { setTimeout(tick, INTERVAL_MS); }
        })
        .catch(function () { if (count < MAX_POLLS) { setTimeout(tick, INTERVAL_MS * 2); } });
    }
    setTimeout(tick, INTERVAL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-report]").forEach(function (cell) {
      var url = cell.getAttribute("data-poll-report");
      if (!url) { return; }
      poll(url, function (data) {
        cell.textContent = (data.label || data.status) + (data.error ? " — " + data.error : "");
        if (data.status === "done") {
          var links = cell.parentNode.querySelector(".downloads"), base = links.getAttribute("data-base");
          links.textContent = "";
          data.formats.forEach(function (fmt) {
            var a = document.createElement("a");
            a.href = base + fmt; a.textContent = fmt.toUpperCase(); a.className = "download";
            a.id = "download-" + data.id + "-" + fmt;
            links.appendChild(a); links.appendChild(document.createTextNode(" "));
          });
        }
      }, function (data) { return data.status === "done" || data.status === "failed"; });
    });

    var state = document.getElementById("record-state");
    if (state && state.getAttribute("data-poll-record")) {
      var initial = state.textContent;
      poll(state.getAttribute("data-poll-record"), function (data) {
        state.textContent = data.label;
        if (data.label !== initial) { window.location.reload(); } // show the next step's buttons
      }, function (data) { return data.state !== "enrollment_pending" && data.state !== "retiring"; });
    }

    document.querySelectorAll("[data-poll-command]").forEach(function (cell) {
      var url = cell.getAttribute("data-poll-command");
      if (!url) { return; }
      poll(url, function (data) { cell.textContent = data.label || data.status; cell.className = "status-" + data.status; },
        function (data) { return ["acknowledged", "error", "command_format_error", "cancelled"].indexOf(data.status) >= 0; });
    });
  });
})();
