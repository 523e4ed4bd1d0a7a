// Live updates: the server sends the page's sections as HTML over server-sent events.
// No framework and no build step; the page works (without live updates) if this fails.
(function () {
  if (!window.EventSource) return;
  var source = new EventSource("/dashboard/stream" + window.location.search);
  source.addEventListener("sections", function (event) {
    var sections = JSON.parse(event.data);
    Object.keys(sections).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.innerHTML = sections[id];
    });
  });
})();
