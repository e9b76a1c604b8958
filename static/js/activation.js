// The page after Stripe Checkout: ask every second whether the webhook has made the plan active,
// then reload to show it (the page's <noscript> refresh does the same without JavaScript).
(function () {
  "use strict";

  var box = document.querySelector("[data-testid=activation]");
  if (!box) return;
  var tries = 0;
  function poll() {
    fetch(box.dataset.statusUrl, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (s) {
      if (s.active) { window.location.reload(); return; }
      if (++tries < 60) { setTimeout(poll, 1000); }
      else { box.querySelector("p").textContent = "This is taking longer than usual. Your plan will change as soon as Stripe confirms the payment."; }
    }).catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 1000);
})();
