// leadscore pages: the little behaviour plain HTML lacks. Everything works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // a select marked data-autosubmit sends its form when changed (the model choice)
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) { select.form.submit(); }
    });
  });
  // dates shown in the reader's own time zone, kept as text
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when.getTime())) { el.title = when.toLocaleString(); }
  });
});
