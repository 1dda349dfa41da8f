// The console's little progressive enhancement (no inline scripts: the CSP forbids them).
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    // The reader's time zone, sent with the sign-in form: every time is shown in it.
    var tz = "UTC";
    try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { /* keep UTC */ }
    document.querySelectorAll("input[data-time-zone]").forEach(function (el) { el.value = tz; });
    // A form is sent once: its button is disabled after the first submit (the server also
    // answers a resent form with the first answer, by its idempotency key).
    document.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("button[type=submit]").forEach(function (b) {
          window.setTimeout(function () { b.disabled = true; }, 0);
        });
      });
    });
    // "Select all" boxes of a list.
    document.querySelectorAll("input[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        document.querySelectorAll("input[name='" + box.dataset.selectAll + "']").forEach(function (b) {
          b.checked = box.checked;
        });
      });
    });
  });
})();
