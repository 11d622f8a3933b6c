// Click a trust point to see its evidence and fix; copy the fix. No network, no library.
(function () {
  var details = document.getElementById("details");
  var points = document.querySelectorAll(".trust-point");
  function show(point) {
    points.forEach(function (p) { p.classList.remove("selected"); });
    point.classList.add("selected");
    details.querySelector(".d-title").textContent =
      point.dataset.check + " " + point.dataset.target + " (" + point.dataset.context + ")";
    details.querySelector(".d-status").textContent = point.dataset.status.toUpperCase();
    details.querySelector(".d-evidence").textContent =
      point.querySelector(".evidence-inline").textContent;
    var fix = point.querySelector(".fix-inline").textContent;
    details.querySelector(".d-fix").textContent = fix || "(nothing to fix)";
    details.querySelector(".copy").disabled = !fix;
  }
  points.forEach(function (p) { p.addEventListener("click", function () { show(p); }); });
  details.querySelector(".copy").addEventListener("click", function () {
    var text = details.querySelector(".d-fix").textContent;
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text);
    } else {
      var range = document.createRange();
      range.selectNodeContents(details.querySelector(".d-fix"));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      document.execCommand("copy");
    }
  });
  var first = document.querySelector(".trust-point.status-fail") || points[0];
  if (first) { show(first); }
})();
