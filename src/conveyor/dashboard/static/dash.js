// conveyor dashboard: live updates of a page's #live region. No dependencies, no inline code.
//
// #live may carry:
//   data-live-url  the URL of the region's fresh HTML (the page with ?fragment=1)
//   data-stream    an event stream (/events...): each "tick" (something changed) or "ready"
//                  (connected, or reconnected after a gap) asks for a refresh
//   data-refresh   also refresh every N ms (pages whose figures change without events)
//   data-throttle  at most one refresh per N ms (default 400)
// A refresh is skipped while the user is typing in a form field of the region, so a
// decision being written is never wiped out.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.liveUrl) {
    return;
  }
  var url = live.dataset.liveUrl;
  var throttle = parseInt(live.dataset.throttle || "400", 10);
  var inFlight = false;
  var pending = false;
  var last = 0;
  var timer = null;

  function busy() {
    var active = document.activeElement;
    if (active && live.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      return true;
    }
    var fields = live.querySelectorAll("textarea, input[type=text]");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== fields[i].defaultValue) {
        return true;
      }
    }
    return false;
  }

  function refresh() {
    timer = null;
    if (inFlight) {
      pending = true;
      return;
    }
    if (busy()) {
      schedule(1000);
      return;
    }
    inFlight = true;
    last = Date.now();
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 303) {
          window.location.reload(); // the session ended: the server shows the login form
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined && !busy()) {
          live.innerHTML = html; // server-rendered and escaped; the CSP forbids inline script
          live.dispatchEvent(new CustomEvent("conveyor:updated"));
        }
      })
      .catch(function () { /* offline for a moment: the next tick tries again */ })
      .then(function () {
        inFlight = false;
        if (pending) {
          pending = false;
          schedule(0);
        }
      });
  }

  function schedule(delay) {
    if (timer !== null) {
      return;
    }
    var wait = Math.max(delay, throttle - (Date.now() - last));
    timer = window.setTimeout(refresh, Math.max(0, wait));
  }

  if (live.dataset.stream && window.EventSource) {
    var source = new EventSource(live.dataset.stream, { withCredentials: true });
    source.addEventListener("tick", function () { schedule(0); });
    source.addEventListener("ready", function () {
      if (last !== 0) {
        schedule(0); // reconnected: events may have been missed meanwhile
      }
      last = last || 1;
    });
    source.addEventListener("error", function () {
      // Closed for good (not reconnecting): e.g. the session ended and the stream answered
      // the login redirect. A refresh finds out, and shows the login form if so.
      if (source.readyState === EventSource.CLOSED) {
        schedule(1000);
      }
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
  var every = parseInt(live.dataset.refresh || "0", 10);
  if (every > 0) {
    window.setInterval(function () { schedule(0); }, every);
  }
})();
