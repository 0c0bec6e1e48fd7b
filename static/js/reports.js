/* Reports: draws the dashboard's charts from the figures the page carries (#report-data),
   and keeps the range picker's preset and dates in step. The tables next to each chart hold
   the same figures, so nothing here is needed to read them. */
(function () {
  "use strict";

  var form = document.querySelector("form.report-filters");
  if (form) {
    var preset = form.querySelector("select[name=range]");
    var dates = form.querySelectorAll("input[type=date]");
    // Typing a date means a custom range (a preset chosen in the list wins over the dates).
    dates.forEach(function (input) {
      input.addEventListener("change", function () {
        if (preset) preset.value = "custom";
      });
    });
  }

  var source = document.getElementById("report-data");
  if (!source || typeof window.Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  var Chart = window.Chart;

  var styles = getComputedStyle(document.body);
  Chart.defaults.font.family = styles.fontFamily;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = "#637083";
  Chart.defaults.borderColor = "#e3e7ed";
  Chart.defaults.maintainAspectRatio = false;
  // Figures are read, not watched: they appear at once.
  Chart.defaults.animation = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  var INDIGO = "#6366f1", GREEN = "#10b981", AMBER = "#f59e0b", RED = "#ef4444", GREY = "#94a3b8";
  var PALETTE = ["#6366f1", "#10b981", "#f59e0b", "#0ea5e9", "#ec4899", "#8b5cf6", "#14b8a6",
                 "#f97316", "#64748b", "#84cc16"];

  function draw(name, config) {
    var canvas = document.querySelector('canvas[data-chart="' + name + '"]');
    if (!canvas) return;
    new Chart(canvas, config);
    canvas.setAttribute("data-drawn", "true");
  }

  function counts(stacked) {
    return {
      x: { stacked: !!stacked, grid: { display: false }, ticks: { maxRotation: 0, autoSkip: true } },
      y: { stacked: !!stacked, beginAtZero: true, ticks: { precision: 0 } }
    };
  }

  function line(label, values, color, extra) {
    var dataset = {
      label: label, data: values, borderColor: color, backgroundColor: color,
      borderWidth: 2, pointRadius: values.length > 45 ? 0 : 2, cubicInterpolationMode: "monotone"
    };
    return Object.assign(dataset, extra || {});
  }

  function bar(label, values, color) {
    return { label: label, data: values, backgroundColor: color, borderRadius: 3, maxBarThickness: 36 };
  }

  var interaction = { mode: "index", intersect: false };

  draw("volume", {
    type: "line",
    data: {
      labels: data.labels,
      datasets: [
        line("Inbound", data.volume.inbound, INDIGO),
        line("Outbound", data.volume.outbound, GREEN),
        line("New conversations", data.volume.new_conversations, AMBER, { borderDash: [5, 4] })
      ]
    },
    options: { interaction: interaction, scales: counts(false) }
  });

  draw("first-response", {
    type: "line",
    data: {
      labels: data.labels,
      datasets: [line("Median first response (min)", data.first_response, INDIGO, { spanGaps: true })]
    },
    options: {
      interaction: interaction,
      plugins: { legend: { display: false } },
      scales: {
        x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkip: true } },
        y: { beginAtZero: true, title: { display: true, text: "minutes" } }
      }
    }
  });

  draw("channels", {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: data.channels.map(function (channel, i) {
        return bar(channel.name, channel.inbound, PALETTE[i % PALETTE.length]);
      })
    },
    options: { interaction: interaction, scales: counts(true) }
  });

  draw("distribution", {
    type: "bar",
    data: {
      labels: data.distribution.labels,
      datasets: [
        bar("First responses", data.distribution.first, INDIGO),
        bar("Next responses", data.distribution.next, GREEN)
      ]
    },
    options: { interaction: interaction, scales: counts(false) }
  });

  draw("sentiment", {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: [
        bar("Positive", data.sentiment.positive, GREEN),
        bar("Neutral", data.sentiment.neutral, GREY),
        bar("Negative", data.sentiment.negative, RED)
      ]
    },
    options: {
      interaction: interaction,
      scales: {
        x: { stacked: true, grid: { display: false }, ticks: { maxRotation: 0, autoSkip: true } },
        y: { stacked: true, beginAtZero: true, max: 100, ticks: { callback: function (v) { return v + "%"; } } }
      },
      plugins: {
        tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + (c.raw === null ? "n/a" : c.raw + "%"); } } }
      }
    }
  });

  draw("backlog", {
    type: "bar",
    data: {
      labels: data.backlog.labels,
      datasets: [
        bar("Open", data.backlog.open, INDIGO),
        bar("Unassigned", data.backlog.unassigned, AMBER)
      ]
    },
    options: { interaction: interaction, scales: counts(false) }
  });
})();
