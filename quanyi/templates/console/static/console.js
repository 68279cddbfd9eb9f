/* quanyi console: the little script the pages need (htmx does the live parts). */
(function () {
  "use strict";

  function csrf() {
    return document.body.getAttribute("data-csrf") || "";
  }

  // A one-time sign-in link carries its token after "#t=": the browser never sends that part to
  // a server. Take it out of the address bar and post it.
  function signInFromFragment() {
    var form = document.getElementById("login-form");
    if (!form) return;
    var match = /^#t=([A-Za-z0-9_-]{20,200})$/.exec(window.location.hash || "");
    if (!match) return;
    document.getElementById("login-token").value = match[1];
    history.replaceState(null, "", window.location.pathname + window.location.search);
    form.submit();
  }

  // <form data-confirm="..."> asks before it posts.
  function confirmForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var question = form.getAttribute && form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) event.preventDefault();
    }, true);
  }

  // <form data-upload data-progress="#bar" data-result="#out"> with one file input: the file is
  // sent as the raw request body (the server reads it as a stream), with a progress bar for the
  // upload and then, when the server streams its own progress lines, for the import.
  function uploads() {
    document.querySelectorAll("form[data-upload]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (event.defaultPrevented) return; // data-confirm was answered "no"
        event.preventDefault();
        var input = form.querySelector("input[type=file]");
        if (!input || !input.files.length) return;
        var file = input.files[0];
        var bar = document.querySelector(form.getAttribute("data-progress"));
        var label = bar && document.querySelector(bar.getAttribute("data-label") || "#none");
        var out = document.querySelector(form.getAttribute("data-result"));
        var params = new URLSearchParams(new FormData(form));
        params.delete(input.name);
        params.delete("csrf");
        params.set("filename", file.name);
        var xhr = new XMLHttpRequest();
        xhr.open("POST", form.action + "?" + params.toString());
        xhr.setRequestHeader("X-CSRF-Token", csrf());
        xhr.setRequestHeader("Content-Type", "application/octet-stream");
        var seen = 0;
        xhr.upload.onprogress = function (e) {
          if (bar && e.lengthComputable) {
            bar.max = e.total; bar.value = e.loaded;
            if (label) label.textContent = Math.floor((100 * e.loaded) / e.total) + "%";
          }
        };
        xhr.onprogress = function () {
          // The server answers with lines "progress DONE TOTAL" while it works, then the report.
          var text = xhr.responseText;
          var lines = text.slice(seen).split("\n");
          lines.forEach(function (line) {
            var m = /^progress (\d+) (\d+)$/.exec(line.trim());
            if (m && bar) {
              bar.max = +m[2] || 1; bar.value = +m[1];
              if (label) label.textContent = m[1] + " / " + m[2];
            }
          });
          seen = text.lastIndexOf("\n") + 1;
        };
        xhr.onloadend = function () {
          var html = xhr.responseText.split("\n").filter(function (l) {
            return !/^progress \d+ \d+$/.test(l.trim());
          }).join("\n");
          if (out) out.innerHTML = html || ("HTTP " + xhr.status);
          if (bar && xhr.status === 200) bar.value = bar.max;
          form.dispatchEvent(new CustomEvent("upload-done", { bubbles: true, detail: { status: xhr.status } }));
        };
        xhr.send(file);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    signInFromFragment();
    confirmForms();
    uploads();
  });
})();
