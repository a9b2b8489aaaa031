// Search results: the snippet under each result is cut from the page's text. Leave out
// the formulas (their TeX source reads as noise without MathJax), code and outputs, and any
// solution block, so that a result shows prose only.
(function () {
  "use strict";
  const OMIT = ["div.math", "span.math", "mjx-container", "script", "style", ".headerlink",
                ".solution", "details.solution", "div.cell", "div.highlight", "pre"];

  function patch() {
    if (typeof Search === "undefined" || !Search.htmlToText || Search._nfcoursePatched) {
      return typeof Search !== "undefined";
    }
    const htmlToText = Search.htmlToText;
    Search.htmlToText = function (htmlString, anchor) {
      const doc = new DOMParser().parseFromString(htmlString, "text/html");
      for (const selector of OMIT) {
        doc.querySelectorAll(selector).forEach((el) => {
          el.replaceWith(selector.endsWith("math") || selector === "mjx-container" ? "\u2026" : "");
        });
      }
      return htmlToText(doc.documentElement.outerHTML, anchor);
    };
    Search._nfcoursePatched = true;
    return true;
  }

  if (!patch()) {
    document.addEventListener("DOMContentLoaded", patch);
  }
})();
