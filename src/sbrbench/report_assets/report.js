// sbrbench report: sortable tables and provenance links (no network, no library).
(function () {
  "use strict";
  function cellKey(cell) {
    if (!cell) return null;
    var v = cell.getAttribute("data-v");
    if (v === null) v = cell.textContent.trim();
    if (v === "" || v === "\u2013" || v === "\u2014") return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function compare(a, b) {
    if (a === null && b === null) return 0;
    if (a === null) return 1;          // missing values last, whatever the direction
    if (b === null) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }
  function sortTable(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = cellKey(r1.cells[index]), b = cellKey(r2.cells[index]);
      if (a === null || b === null) return compare(a, b);
      var c = compare(a, b);
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function initTables() {
    var tables = document.querySelectorAll("table.sortable");
    for (var t = 0; t < tables.length; t++) {
      (function (table) {
        if (!table.tHead || !table.tBodies.length) return;
        var heads = table.tHead.rows[0].cells;
        for (var i = 0; i < heads.length; i++) {
          (function (th) {
            th.tabIndex = 0;
            th.title = "sort by this column";
            th.addEventListener("click", function () { sortTable(table, th); });
            th.addEventListener("keydown", function (e) {
              if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, th); }
            });
          })(heads[i]);
        }
      })(tables[t]);
    }
  }
  function openTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) return;
    var el = document.getElementById(id);
    if (el && el.tagName === "DETAILS") { el.open = true; el.scrollIntoView({block: "start"}); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    initTables();
    openTarget();
    window.addEventListener("hashchange", openTarget);
    document.documentElement.setAttribute("data-ready", "1");
  });
})();
