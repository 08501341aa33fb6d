// Front-desk behaviours for the schedule, booking and patient pages; no inline script (the CSP forbids it).
(function () {
  "use strict";

  // A date picker that jumps straight to the chosen day.
  document.addEventListener("change", function (evt) {
    var el = evt.target;
    if (el.matches && el.matches("input[data-autosubmit]") && el.form) el.form.submit();
  });

  // The esketamine dose shows only for protocols that take one.
  function syncDose(root) {
    (root || document).querySelectorAll("[data-dose-for]").forEach(function (box) {
      var form = box.closest("form");
      if (!form) return;
      var picked = form.querySelector("input[name=session_type]:checked, select[name=session_type]");
      var kinds = (box.getAttribute("data-dose-for") || "").split(" ");
      box.hidden = !(picked && kinds.indexOf(picked.value) !== -1);
    });
  }

  // Course templates follow the chosen protocol.
  function syncTemplates() {
    document.querySelectorAll("select[data-template-switch]").forEach(function (sel) {
      var form = sel.closest("form");
      var tpl = form && form.querySelector("select[name=template]");
      if (!tpl) return;
      var firstShown = null;
      Array.prototype.forEach.call(tpl.options, function (opt) {
        var show = opt.getAttribute("data-kind") === sel.value;
        opt.hidden = !show;
        opt.disabled = !show;
        if (show && !firstShown) firstShown = opt;
      });
      if (tpl.selectedOptions.length === 0 || tpl.selectedOptions[0].disabled) {
        if (firstShown) firstShown.selected = true;
      }
    });
  }

  // "Other…" reason reveals a text box.
  function syncOther(sel) {
    var other = document.getElementById(sel.getAttribute("data-other"));
    if (!other) return;
    other.hidden = sel.value !== "other";
    other.required = sel.value === "other";
  }

  document.addEventListener("change", function (evt) {
    var el = evt.target;
    if (el.name === "session_type") { syncDose(); syncTemplates(); }
    if (el.matches && el.matches("select[data-other]")) syncOther(el);
  });

  // A refusal names its field: mark that input and move the focus to it.
  document.addEventListener("htmx:afterSwap", function (evt) {
    if (!evt.detail.target || evt.detail.target.id !== "flash") return;
    document.querySelectorAll("[aria-invalid=true][data-marked]").forEach(function (el) {
      el.removeAttribute("aria-invalid");
      el.removeAttribute("data-marked");
    });
    var box = evt.detail.target.querySelector("[data-field]");
    if (!box) return;
    var field = box.getAttribute("data-field").split(".").pop();
    var input = document.querySelector("main [name='" + field + "']:not([type=hidden])");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("data-marked", "1");
      input.focus({ preventScroll: false });
    } else {
      evt.detail.target.scrollIntoView({ block: "nearest" });
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    syncDose();
    syncTemplates();
    document.querySelectorAll("select[data-other]").forEach(syncOther);
  });
})();
