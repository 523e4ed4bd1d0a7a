// The reports page's charts, drawn by the vendored Chart.js (fleet/static/chart.umd.min.js,
// MIT, see chart.js.LICENSE.md) from the figures the page carries as a JSON block: no inline
// script (the CSP forbids it), no other origin, no build step. Without it the table stays.
(function () {
  var block = document.getElementById("report-data");
  if (!block || !window.Chart) return;
  var data = JSON.parse(block.textContent);
  var palette = ["#14456b", "#2a7ab0", "#4fa3d1", "#86c5e8", "#e0a030", "#c0602a", "#8e3b1f"];
  Chart.defaults.animation = false; // figures, not a show: draw once, at once
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = 'system-ui, "Noto Sans", sans-serif';
  Chart.defaults.locale = data.locale; // 11.475 in Vietnamese, 11,475 in English

  function done(id) {
    var canvas = document.getElementById(id);
    canvas.setAttribute("data-drawn", "true");
  }

  new Chart(document.getElementById("chart-week"), {
    type: "line",
    data: {
      labels: data.week.labels,
      datasets: data.week.series.map(function (s, i) {
        return { label: s.label, data: s.data, borderColor: palette[i % palette.length],
                 backgroundColor: palette[i % palette.length], pointRadius: 0, tension: 0.3 };
      })
    },
    options: { scales: { x: { title: { display: true, text: data.week.x } },
                         y: { beginAtZero: true } },
               interaction: { mode: "index", intersect: false } }
  });
  done("chart-week");

  new Chart(document.getElementById("chart-loans"), {
    type: "bar",
    data: { labels: data.loans.labels,
            datasets: [{ label: data.loans.label, data: data.loans.data,
                         backgroundColor: "#2a7ab0" }] },
    options: { plugins: { legend: { display: false } },
               scales: { x: { title: { display: true, text: data.loans.x } },
                         y: { beginAtZero: true } } }
  });
  done("chart-loans");

  function years(y) {
    new Chart(document.getElementById("chart-years"), {
      type: "bar",
      data: { labels: y.labels,
              datasets: [
                { label: y.this_label, data: y.this, backgroundColor: "#14456b" },
                { label: y.last_label, data: y.last, backgroundColor: "#b9c6d3" }
              ] },
      options: { scales: { y: { beginAtZero: true } } }
    });
    done("chart-years");
  }
  // a year against the year before reads two years of figures: asked apart, drawn when
  // they arrive, unless the period itself was the year so far
  if (data.years) {
    years(data.years);
  } else {
    fetch(data.years_url, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(years)
      .catch(function () { document.getElementById("chart-years").setAttribute("data-drawn", "failed"); });
  }
})();
