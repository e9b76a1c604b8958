// Every page's small behaviours, kept out of the HTML: the Content-Security-Policy refuses inline
// scripts, on...="" handlers and style="" attributes, but lets this file set styles through the DOM.
(function () {
  "use strict";

  // Bars drawn to a width the server knows (quota, cap): <span data-percent="37">.
  document.querySelectorAll("[data-percent]").forEach(function (bar) {
    var percent = Math.min(100, Math.max(0, Number(bar.dataset.percent) || 0));
    bar.style.width = percent + "%";
  });

  // A form that asks before it posts: <form data-confirm="Delete this?">.
  document.addEventListener("submit", function (e) {
    var question = e.target.dataset && e.target.dataset.confirm;
    if (question && !window.confirm(question)) e.preventDefault();
  });
})();
