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
