// Small behaviours shared by every page; no inline script anywhere (the CSP forbids it).
document.addEventListener("htmx:beforeRequest", function () {
  var flash = document.getElementById("flash");
  if (flash) flash.innerHTML = "";
});
// A swap that returns an error still shows it (htmx ignores 4xx bodies by default).
document.addEventListener("htmx:beforeSwap", function (evt) {
  var status = evt.detail.xhr.status;
  if (status === 409 || status === 422 || status === 400 || status === 403 || status === 429) {
    evt.detail.shouldSwap = true;
    evt.detail.isError = false;
  }
});
// Forms that ask for confirmation carry data-confirm instead of an inline onclick.
document.addEventListener("submit", function (evt) {
  var msg = evt.target.getAttribute && evt.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) evt.preventDefault();
}, true);
// A table that scrolls sideways on a tablet must be reachable by keyboard and named for screen readers.
function labelScrollRegions(root) {
  (root || document).querySelectorAll(".table-wrap:not([tabindex])").forEach(function (el) {
    el.setAttribute("tabindex", "0");
    el.setAttribute("role", "region");
    if (!el.getAttribute("aria-label")) {
      var cap = el.querySelector("caption, h2, h3") || el.closest("section, article");
      var heading = cap && (cap.matches("caption, h2, h3") ? cap : cap.querySelector("h2, h3"));
      el.setAttribute("aria-label", heading ? heading.textContent.trim() : "Table");
    }
  });
}
document.addEventListener("DOMContentLoaded", function () { labelScrollRegions(document); });
document.addEventListener("htmx:afterSwap", function (evt) { labelScrollRegions(evt.target); });
