// Automatic logoff on screen: when the server would have ended the session, leave the page so no
// patient data stays on an unattended screen. Needs <meta name="clinic-idle-minutes" content="N">.
(function () {
  var meta = document.querySelector('meta[name="clinic-idle-minutes"]');
  var minutes = meta ? parseInt(meta.getAttribute("content"), 10) : 0;
  if (!minutes || minutes < 1) return;
  var timer = null;
  function leave() {
    var here = window.location.pathname + window.location.search;
    // the server ends the idle session on this request and the sign-in page says why
    window.location.assign("/login?reason=idle&idle=" + minutes + "&next=" + encodeURIComponent(here));
  }
  function restart() {
    if (timer) window.clearTimeout(timer);
    // a few seconds late, so the server has certainly expired the session first
    timer = window.setTimeout(leave, minutes * 60 * 1000 + 5000);
  }
  document.addEventListener("htmx:afterRequest", function (evt) {
    var headers = (evt.detail && evt.detail.requestConfig && evt.detail.requestConfig.headers) || {};
    if (!headers["X-Clinic-Background"] && !headers["x-clinic-background"]) restart();
  });
  restart();
})();
