// One kiosk's activity chart, drawn by the vendored Chart.js (served with the reports page,
// MIT) from the JSON block the page carries: no inline script, no other origin. Without it
// the table below the chart says everything.
(function () {
  var block = document.getElementById("kiosk-data");
  var canvas = document.getElementById("chart-activity");
  if (!block || !canvas || !window.Chart) return;
  var data = JSON.parse(block.textContent);
  var palette = ["#14456b", "#b3261e", "#2a7ab0", "#4f7a28", "#8e3b1f"];
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.locale = data.locale;
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.days,
      datasets: data.series.map(function (s, i) {
        return { label: s.label, data: s.data, backgroundColor: palette[i % palette.length] };
      })
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } }
  });
  canvas.setAttribute("data-drawn", "true");
})();
