/* labelpilot dashboard: charts (Chart.js, vendored) and live polling. No inline script: the CSP forbids it.
 * Everything from the server is put into the page with textContent / DOM properties, never innerHTML. */
"use strict";

(function () {
  const COLORS = ["#2f6fde", "#d9822b", "#238a4b", "#c43d3d", "#7e57c2", "#00838f", "#8d6e63", "#546e7a"];
  const charts = {};
  window.labelpilotCharts = charts;  // for the browser tests and for debugging

  function readJSON(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function fmtTime(ts) {
    if (!ts) return "—";
    return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (text !== undefined && text !== null) td.textContent = String(text);
    return td;
  }

  // -- learning curve ------------------------------------------------------------------------------
  function drawCurve() {
    const data = readJSON("curve-data");
    const canvas = document.getElementById("curve");
    if (!data || !canvas || typeof Chart === "undefined") return;
    charts.curve = new Chart(canvas, {
      type: "line",
      data: {
        datasets: data.series.map((s, i) => ({
          label: s.metric, data: s.points, borderColor: COLORS[i % COLORS.length],
          backgroundColor: COLORS[i % COLORS.length], tension: 0, pointRadius: 4, clip: false,
        })),
      },
      options: {
        animation: false, maintainAspectRatio: false, parsing: true,
        scales: {
          x: { type: "linear", title: { display: true, text: "annotations" }, beginAtZero: true },
          y: { min: 0, max: 1, title: { display: true, text: "quality" } },
        },
      },
    });
  }

  // -- jobs: live progress --------------------------------------------------------------------------
  function renderJobs(table, jobs) {
    const tbody = table.tBodies[0];
    const rows = jobs.map((j) => {
      const tr = document.createElement("tr");
      tr.dataset.job = j.id;
      tr.appendChild(cell(j.id));
      tr.appendChild(cell(j.reason));
      const state = cell();
      const span = document.createElement("span");
      span.className = "state " + j.state;
      span.textContent = j.state;
      state.appendChild(span);
      tr.appendChild(state);
      const prog = cell();
      const text = document.createElement("span");
      text.className = "progress-text";
      text.textContent = j.progress || "";
      prog.appendChild(text);
      if (j.total) {
        const bar = document.createElement("progress");
        bar.max = j.total;
        bar.value = j.done;
        prog.appendChild(document.createTextNode(" "));
        prog.appendChild(bar);
      }
      tr.appendChild(prog);
      tr.appendChild(cell(fmtTime(j.queued)));
      tr.appendChild(cell(fmtTime(j.finished)));
      const last = cell();
      if (j.error) {
        const e = document.createElement("span");
        e.className = "error";
        e.textContent = j.error;
        last.appendChild(e);
      } else if (j.version) {
        const c = document.createElement("code");
        c.textContent = j.version;
        last.appendChild(c);
      }
      tr.appendChild(last);
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "none";
      const td = cell("No training job yet.", "muted");
      td.colSpan = 7;
      tr.appendChild(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  function pollJobs() {
    const table = document.getElementById("jobs");
    if (!table) return;
    const project = table.dataset.project;
    const known = Number(table.dataset.nVersions);
    const url = "/ui/api/jobs?project=" + encodeURIComponent(project);
    let busy = false;
    async function tick() {
      if (busy) return;
      busy = true;
      try {
        const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if (resp.ok) {
          const body = await resp.json();
          renderJobs(table, body.jobs);
          table.dataset.polled = String(Number(table.dataset.polled || 0) + 1);
          if (body.n_versions !== known) document.getElementById("new-version").hidden = false;
        }
      } catch (err) {
        // the server may be restarting: keep the last table and try again on the next tick
      } finally {
        busy = false;
      }
    }
    tick();
    setInterval(tick, 1000);
  }

  // -- /v1 traffic ----------------------------------------------------------------------------------
  function lineChart(id, datasets, yTitle) {
    const canvas = document.getElementById(id);
    if (!canvas) return null;
    return new Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: datasets.map((d, i) => ({ borderColor: COLORS[i], backgroundColor: COLORS[i],
        pointRadius: 0, tension: 0, spanGaps: false, data: [], ...d })) },
      options: { animation: false, maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, title: { display: true, text: yTitle } } } },
    });
  }

  function pollTraffic() {
    if (!document.getElementById("chart-rps") || typeof Chart === "undefined") return;
    charts.rps = lineChart("chart-rps", [{ label: "requests/s" }], "req/s");
    charts.latency = lineChart("chart-latency", [{ label: "p50" }, { label: "p95" }, { label: "p99" }], "ms");
    charts.errors = lineChart("chart-errors", [{ label: "errors" }], "errors");
    charts.errors.data.datasets[0].borderColor = COLORS[3];
    charts.errors.data.datasets[0].backgroundColor = COLORS[3];
    async function tick() {
      try {
        const resp = await fetch("/ui/api/traffic?last=90", { credentials: "same-origin", cache: "no-store" });
        if (!resp.ok) return;
        const body = await resp.json();
        const labels = body.series.map((b) => new Date(b.t * 1000).toISOString().slice(11, 19));
        for (const c of [charts.rps, charts.latency, charts.errors]) c.data.labels = labels;
        charts.rps.data.datasets[0].data = body.series.map((b) => b.rps);
        ["p50_ms", "p95_ms", "p99_ms"].forEach((k, i) => {
          charts.latency.data.datasets[i].data = body.series.map((b) => b[k]);
        });
        charts.errors.data.datasets[0].data = body.series.map((b) => b.errors);
        for (const c of [charts.rps, charts.latency, charts.errors]) c.update();
        for (const el of document.querySelectorAll("[data-total]")) {
          const v = body.last_5min[el.dataset.total];
          const ms = el.dataset.total.endsWith("_ms");
          el.textContent = v === null || v === undefined ? "—" : ms ? v.toFixed(1) + " ms" : String(v);
        }
        document.body.dataset.trafficPolled = String(Number(document.body.dataset.trafficPolled || 0) + 1);
      } catch (err) {
        // keep the last charts; the next tick tries again
      }
    }
    tick();
    setInterval(tick, 5000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    drawCurve();
    pollJobs();
    pollTraffic();
  });
})();
