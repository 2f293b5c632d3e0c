// jobchain dashboard: live counts (server-sent events, polling when they fail) and confirmations.
// Values are written with textContent only: nothing received is ever parsed as HTML.
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base || "";
  var minInterval = Math.max(parseFloat(body.dataset.interval) || 1, 0.2);
  var status = document.getElementById("live-status");
  var watched = document.querySelectorAll("[data-live]");

  function setStatus(kind, title) {
    if (!status) { return; }
    status.className = "live " + kind;
    status.title = title;
  }

  function valueFor(snapshot, key) {
    // keys: "total:ready", "workers", "queue:<field>:<queue name>" (the name may hold colons)
    var parts = key.split(":");
    if (parts[0] === "workers") { return snapshot.workers; }
    if (parts[0] === "total") { return (snapshot.totals || {})[parts[1]]; }
    if (parts[0] === "queue") {
      var row = (snapshot.queues || {})[parts.slice(2).join(":")];
      if (!row) { return 0; }
      if (parts[1] === "paused") { return row.paused ? "paused" : ""; }
      return row[parts[1]];
    }
    return undefined;
  }

  function apply(snapshot) {
    for (var i = 0; i < watched.length; i++) {
      var el = watched[i];
      var value = valueFor(snapshot, el.dataset.live);
      if (value === undefined || value === null) { continue; }
      var text = String(value);
      if (el.textContent !== text) {
        el.textContent = text;
        el.classList.add("changed");
      }
    }
    body.dataset.liveAt = String(snapshot.at || "");
  }

  var pollTimer = null;
  function poll() {
    fetch(base + "/live.json", { credentials: "same-origin", headers: { "accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (snapshot) { apply(snapshot); setStatus("polling", "live (polling)"); })
      .catch(function () { setStatus("", "live updates stopped"); })
      .finally(function () { pollTimer = window.setTimeout(poll, Math.max(minInterval, 2) * 1000); });
  }

  function stream() {
    if (!window.EventSource) { poll(); return; }
    var interval = Math.max(minInterval, 2);
    var source = new EventSource(base + "/live?interval=" + interval);
    var opened = false;
    source.addEventListener("counts", function (event) {
      opened = true;
      setStatus("on", "live");
      try { apply(JSON.parse(event.data)); } catch (e) { /* a bad frame: wait for the next */ }
    });
    source.onerror = function () {
      if (!opened || source.readyState === EventSource.CLOSED) {
        source.close();
        if (pollTimer === null) { poll(); }
      }
    };
  }

  if (watched.length > 0 || body.dataset.livePage) { stream(); }

})();
