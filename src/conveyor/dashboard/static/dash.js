// conveyor dashboard: live updates of a page's #live region. No dependencies, no inline code.
//
// #live may carry:
//   data-live-url  the URL of the region's fresh HTML (the page with ?fragment=1)
//   data-stream    an event stream (/events...): each "tick" (something changed) or "ready"
//                  (connected: what changed since the render, or during a gap) asks for a
//                  refresh; a stream the server refused (429, 503) is opened again after
//                  1, 2, 4 ... 30 s
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
  var leaving = false; // reloading onto the login form
  var revive = false; // the stream was refused: open it again once a refresh found the session
  var reopenLater = function () {};

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
    var checks = revive; // this refresh starts after the refusal: it tells whether to reopen
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 303) {
          leaving = true;
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
        if (checks && revive && !leaving) {
          revive = false;
          reopenLater();
        }
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
    var source = null;
    var reopen = null;
    var backoff = 1000; // ms before reopening a refused stream: doubled each time, capped
    var connect = function () {
      reopen = null;
      source = new EventSource(live.dataset.stream, { withCredentials: true });
      source.addEventListener("tick", function () { schedule(0); });
      source.addEventListener("ready", function () {
        // The stream ticks for what is written after it connected; what was written between
        // the page's render (or the last connection) and now would never tick: refresh once.
        backoff = 1000;
        schedule(0);
      });
      source.addEventListener("error", function () {
        // Closed for good (the browser does not reconnect by itself): the connect got no
        // stream, e.g. 429 (the key's rate) or 503 (too many streams), or the session ended
        // and the stream answered the login redirect. A refresh finds out whether the session
        // ended, and reloads to show the login form if so; otherwise the stream is opened
        // again later, backing off (with jitter: a restarted server is not hit by every page
        // at once).
        if (source.readyState === EventSource.CLOSED && reopen === null && !revive) {
          revive = true;
          schedule(0);
        }
      });
    };
    reopenLater = function () {
      reopen = window.setTimeout(connect, backoff * (0.75 + Math.random() / 2));
      backoff = Math.min(backoff * 2, 30000);
    };
    connect();
    window.addEventListener("pagehide", function () {
      if (reopen !== null) {
        window.clearTimeout(reopen);
        reopen = null;
      }
      source.close();
    });
  }
  var every = parseInt(live.dataset.refresh || "0", 10);
  if (every > 0) {
    window.setInterval(function () { schedule(0); }, every);
  }
})();
