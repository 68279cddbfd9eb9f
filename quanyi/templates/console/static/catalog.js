/* quanyi console, catalogue: the new-product form shows only the fields of the chosen kind
   (without this script every field shows; the server ignores none and refuses misplaced ones). */
(function () {
  "use strict";
  function kindFields() {
    document.querySelectorAll("select[data-kind-select]").forEach(function (select) {
      var form = select.form;
      function show() {
        form.querySelectorAll("fieldset[data-kinds]").forEach(function (set) {
          var on = set.getAttribute("data-kinds").split(" ").indexOf(select.value) >= 0;
          set.hidden = !on;
          set.disabled = !on; // a hidden field is not sent
        });
      }
      select.addEventListener("change", show);
      show();
    });
  }
  document.addEventListener("DOMContentLoaded", kindFields);
})();
