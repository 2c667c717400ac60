// Keeps an open console page fresh without a reload: every 5 s it fetches
// the same URL and swaps <main data-live> for the new one. It stays still
// while you type in a form, and says so when it cannot reach ripcord.
// Pages work without it; it only saves the reload.
(function () {
  "use strict";
  var PERIOD_MS = 5000;
  var typing = false;
  document.addEventListener("input", function () { typing = true; });
  function state(text) {
    var s = document.getElementById("live-state");
    if (s) { s.textContent = text; }
  }
  function busy() {
    var a = document.activeElement;
    return typing || (a && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName));
  }
  function tick() {
    var main = document.querySelector("main[data-live]");
    if (!main || document.hidden || busy()) { return; }
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main[data-live]");
        if (fresh && !busy()) {
          main.innerHTML = fresh.innerHTML;
          state("updated " + new Date().toLocaleTimeString());
        }
      })
      .catch(function (e) { state("not updating: " + e.message); });
  }
  setInterval(tick, PERIOD_MS);
})();
