// The roster upload's progress bar (DESIGN.md §12): htmx sends the form and fires
// htmx:xhr:progress while the file goes up. A refusal (400: not a roster, a bad header) is swapped
// in like a result, so the page says why. Otherwise the answer is the upload's page, whose status
// polls the import by itself (hx-trigger, no script here). Without script the form posts as a
// plain page and follows the redirect.
document.addEventListener("htmx:xhr:progress", function (event) {
  var bar = document.getElementById("roster-progress");
  if (!bar || !event.detail.lengthComputable || !event.detail.total) {
    return;
  }
  bar.hidden = false;
  bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
});
document.addEventListener("htmx:beforeSwap", function (event) {
  var config = event.detail.requestConfig;
  if (event.detail.xhr.status === 400 && config && config.elt && config.elt.id === "roster-form") {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
