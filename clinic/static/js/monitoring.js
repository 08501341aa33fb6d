// Tablet session page and live board: a fresh client_id per submission, refreshes that never eat a half-typed entry.
(function () {
  "use strict";

  // crypto.randomUUID needs a secure context; clinic tablets on plain http still get a v4 UUID.
  function newId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      try { return window.crypto.randomUUID(); } catch (e) { /* insecure context: fall through */ }
    }
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function fillIds(root) {
    var inputs = (root || document).querySelectorAll("input[data-client-id]");
    for (var i = 0; i < inputs.length; i++) {
      if (!inputs[i].value) inputs[i].value = newId();
    }
  }

  document.addEventListener("DOMContentLoaded", function () { fillIds(document); });
  document.addEventListener("htmx:load", function (evt) { fillIds(evt.detail.elt); });

  // A saved submission gets a new id; a failed one keeps its id, so a retry can never write twice.
  document.addEventListener("htmx:afterRequest", function (evt) {
    var elt = evt.detail.elt;
    if (!evt.detail.successful || !elt || elt.tagName !== "FORM") return;
    var input = elt.querySelector("input[data-client-id]");
    if (input) input.value = newId();
    delete elt.dataset.dirty;
  });

  document.addEventListener("input", function (evt) {
    var form = evt.target.closest && evt.target.closest("form[data-entry-form], form.entry-form");
    if (form) form.dataset.dirty = "1";
  });

  function busy(live) {
    if (live.querySelector("form[data-dirty]")) return true;
    var active = document.activeElement;
    return !!(active && live.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName));
  }

  var openDetails = [];
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var target = evt.detail.target;
    if (!target || target.id !== "session-live") return;
    var verb = evt.detail.requestConfig && evt.detail.requestConfig.verb;
    // the periodic or live refresh waits while a nurse is typing; the next one after saving catches up
    if (verb === "get" && busy(target)) {
      evt.detail.shouldSwap = false;
      target.classList.add("stale");
      return;
    }
    openDetails = Array.prototype.map.call(target.querySelectorAll("details[open][id]"), function (d) { return d.id; });
  });
  document.addEventListener("htmx:afterSettle", function (evt) {
    if (!evt.detail.target || evt.detail.target.id !== "session-live") return;
    openDetails.forEach(function (id) {
      var d = document.getElementById(id);
      if (d) d.open = true;
    });
    openDetails = [];
  });

  // Board connection state, so a screen that lost the stream says so.
  function liveStatus(text, bad) {
    var el = document.querySelector("[data-live-status]");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("bad-text", !!bad);
  }
  document.addEventListener("htmx:sseOpen", function () { liveStatus("Live: updates appear within seconds.", false); });
  document.addEventListener("htmx:sseError", function () { liveStatus("Connection lost: reconnecting…", true); });

  document.addEventListener("click", function (evt) {
    if (evt.target.closest && evt.target.closest("[data-print]")) window.print();
  });
})();
