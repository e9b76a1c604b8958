// Inkwell's generate and job pages: submit without leaving the page, stream the text as it is
// written (server-sent events, falling back to polling), stop, copy, count prompt tokens.
// Without JavaScript the forms post normally and the job page refreshes itself.
(function () {
  "use strict";

  var output = document.getElementById("output");
  var form = document.getElementById("generate-form");
  if (!output) return;

  var statusPill = output.querySelector("[data-testid=job-status]");
  var textBox = output.querySelector("[data-testid=output-text]");
  var errorBox = output.querySelector("[data-testid=job-error]");
  var queueInfo = output.querySelector("[data-testid=queue-info]");
  var numbers = output.querySelector("[data-testid=job-numbers]");
  var foot = output.querySelector(".output-foot");
  var stopButton = document.getElementById("stop-button");
  var generateButton = document.getElementById("generate-button");
  var current = null; // {id, statusUrl, streamUrl, url}
  var source = null;
  var pollTimer = null;

  function csrf() {
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function setStatus(status) {
    statusPill.textContent = status;
    statusPill.className = "status-pill status-" + status;
    var running = status === "queued" || status === "running";
    if (stopButton) stopButton.hidden = !running;
    if (generateButton) generateButton.disabled = running;
    if (status !== "queued") queueInfo.textContent = "";
  }

  function finish(data) {
    if (source) { source.close(); source = null; }
    if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; }
    setStatus(data.status);
    if (typeof data.text === "string" && data.text !== textBox.textContent) textBox.textContent = data.text;
    if (data.error) { errorBox.textContent = data.error; errorBox.hidden = false; }
    numbers.textContent = data.prompt_tokens + " prompt + " + data.completion_tokens +
      " completion tokens · charged " + data.tokens_charged + (data.finish_reason ? " · finished: " + data.finish_reason : "");
    foot.hidden = false;
    if (stopButton) stopButton.hidden = true;
    if (current) refreshMeter();
  }

  function refreshMeter() {
    // The quota meter in the header reflects the settled charge.
    fetch(window.location.href, {credentials: "same-origin"}).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.querySelector("[data-testid=quota-meter]");
      var meter = document.querySelector("[data-testid=quota-meter]");
      if (fresh && meter) meter.replaceWith(fresh);
    }).catch(function () {});
  }

  function showQueue(data) {
    if (data.queue_position !== null && data.queue_position !== undefined) {
      queueInfo.textContent = "Position " + (data.queue_position + 1) + " in the queue" +
        (data.wait_estimate_seconds ? ", about " + data.wait_estimate_seconds + " s." : ".");
    }
  }

  function watchQueue() {
    // Only the queue position: the text comes from the stream.
    fetch(current.statusUrl, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (data) {
      if (data.status !== "queued" || statusPill.textContent !== "queued") return;
      showQueue(data);
      setTimeout(watchQueue, 2000);
    }).catch(function () {});
  }

  function poll() {
    // The fallback when the stream dropped: the whole state, every second, until the end.
    fetch(current.statusUrl, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (data) {
      textBox.textContent = data.text;
      showQueue(data);
      if (["succeeded", "failed", "cancelled"].indexOf(data.status) >= 0) { finish(data); return; }
      setStatus(data.status);
      pollTimer = setTimeout(poll, 1000);
    }).catch(function () { pollTimer = setTimeout(poll, 2000); });
  }

  function stream() {
    if (!window.EventSource) { poll(); return; }
    source = new EventSource(current.streamUrl);
    source.addEventListener("status", function (e) { setStatus(JSON.parse(e.data).status); });
    source.addEventListener("snapshot", function (e) { textBox.textContent = JSON.parse(e.data).text; });
    source.addEventListener("delta", function (e) { textBox.textContent += JSON.parse(e.data).text; });
    source.addEventListener("reset", function () { textBox.textContent = ""; });
    source.addEventListener("end", function (e) {
      var data = JSON.parse(e.data);
      // The end event carries the counts; the text is what was streamed (or the snapshot before it).
      data.text = textBox.textContent;
      finish(data);
    });
    source.onerror = function () {
      // The stream dropped: poll until the job is over.
      if (source) { source.close(); source = null; }
      if (!pollTimer) poll();
    };
  }

  function follow(job) {
    current = job;
    output.hidden = false;
    textBox.textContent = "";
    errorBox.hidden = true;
    foot.hidden = true;
    setStatus("queued");
    var links = output.querySelectorAll("[data-link]");
    links.forEach(function (a) {
      var kind = a.getAttribute("data-link");
      if (kind === "txt" || kind === "md") a.href = job.url + "download." + kind;
      if (kind === "rerun") a.href = "?from=" + job.id;
      if (kind === "job") a.href = job.url;
    });
    watchQueue();
    stream();
  }

  output.addEventListener("click", function (e) {
    if (e.target.getAttribute("data-action") === "copy" && navigator.clipboard) {
      navigator.clipboard.writeText(textBox.textContent);
      e.target.textContent = "Copied";
      setTimeout(function () { e.target.textContent = "Copy"; }, 1500);
    }
  });

  if (stopButton) {
    stopButton.addEventListener("click", function (e) {
      if (!current) return;
      e.preventDefault();
      stopButton.disabled = true;
      fetch(current.url + "cancel/", {
        method: "POST", credentials: "same-origin",
        headers: {"X-CSRFToken": csrf(), "Accept": "application/json"}
      }).then(function () { stopButton.disabled = false; });
    });
  }

  // The job page: follow a job that is still going.
  if (output.dataset.job) {
    current = {id: output.dataset.job, url: window.location.pathname, statusUrl: output.dataset.statusUrl,
               streamUrl: output.dataset.streamUrl};
    if (output.dataset.final !== "true") { textBox.textContent = ""; stream(); }
    return;
  }
  if (!form) return;

  // The generate page: modes, the live token counter, and submitting without a page load.
  var chatModels = (form.dataset.chatModels || "").split(",").filter(Boolean);
  var modelSelect = form.querySelector("[name=model]");
  var modeSwitch = form.querySelector(".mode-switch");
  function mode() { var m = form.querySelector("[name=mode]:checked"); return m ? m.value : "prompt"; }
  function showMode() {
    var chatAllowed = chatModels.indexOf(modelSelect.value) >= 0;
    if (modeSwitch) modeSwitch.hidden = !chatAllowed;
    if (!chatAllowed) { var p = form.querySelector("[name=mode][value=prompt]"); if (p) p.checked = true; }
    form.querySelectorAll("[data-mode]").forEach(function (el) { el.hidden = el.getAttribute("data-mode") !== mode(); });
  }
  form.addEventListener("change", function (e) { if (e.target.name === "mode" || e.target.name === "model") { showMode(); count(); } });
  showMode();

  var counter = form.querySelector("[data-testid=token-counter]");
  var countTimer = null;
  var countPausedUntil = 0;
  function count() {
    clearTimeout(countTimer);
    // Counting is rate-limited per user: while paused, count once when the pause is over.
    var wait = Math.max(250, countPausedUntil - Date.now());
    countTimer = setTimeout(function () {
      var body = new FormData(form);
      fetch(form.dataset.countUrl, {method: "POST", body: body, credentials: "same-origin",
                                    headers: {"X-CSRFToken": csrf()}})
        .then(function (r) { return r.json().then(function (data) { return {status: r.status, data: data}; }); })
        .then(function (res) {
          var data = res.data;
          if (res.status === 429) {
            // Keep the last count on screen and try again after the pause.
            countPausedUntil = Date.now() + (data.retry_after || 10) * 1000;
            count();
            return;
          }
          if (data.tokens === undefined) {
            // Too long to count (413) or an unreadable conversation (400): say so, as an overrun.
            if (data.error) { counter.textContent = data.error; counter.classList.add("over"); }
            return;
          }
          counter.textContent = data.tokens + " / " + data.limit + " prompt tokens";
          counter.classList.toggle("over", data.tokens > data.limit);
        }).catch(function () {});
    }, wait);
  }
  form.addEventListener("input", function (e) { if (["prompt", "message", "system"].indexOf(e.target.name) >= 0) count(); });

  function showErrors(errors) {
    form.querySelectorAll(".field-message.js").forEach(function (el) { el.remove(); });
    var general = [];
    Object.keys(errors).forEach(function (name) {
      var messages = errors[name].map(function (x) { return x.message; }).join(" ");
      var input = form.querySelector("[name=" + name + "]");
      if (name === "__all__" || !input) { general.push(messages); return; }
      var note = document.createElement("span");
      note.className = "field-message js";
      note.setAttribute("role", "alert");
      note.textContent = messages;
      input.closest(".field").appendChild(note);
      var details = input.closest("details"); if (details) details.open = true;
    });
    var box = form.querySelector("[data-testid=form-error]");
    if (!box) {
      box = document.createElement("div");
      box.className = "message message-error";
      box.setAttribute("role", "alert");
      box.setAttribute("data-testid", "form-error");
      form.insertBefore(box, form.firstChild.nextSibling);
    }
    box.hidden = general.length === 0;
    box.textContent = general.join(" ");
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    generateButton.disabled = true;
    fetch(form.action, {method: "POST", body: new FormData(form), credentials: "same-origin",
                        headers: {"Accept": "application/json", "X-CSRFToken": csrf()}})
      .then(function (r) { return r.json().then(function (data) { return {ok: r.ok, data: data}; }); })
      .then(function (res) {
        if (!res.ok) { generateButton.disabled = false; showErrors(res.data.errors || {}); return; }
        showErrors({});
        follow({id: res.data.id, url: res.data.url, statusUrl: res.data.status_url, streamUrl: res.data.stream_url});
      })
      .catch(function () { generateButton.disabled = false; form.submit(); });
  });
})();
