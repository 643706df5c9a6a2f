// Gate countdowns, the bid curve plot, and a guard that keeps polling from wiping a
// selection the operator is making.
(function () {
  "use strict";

  window.vppNoSelection = function () {
    return !document.querySelector("#bids-table input[type=checkbox]:checked");
  };

  function fmt(ms) {
    if (ms <= 0) { return "gate closed"; }
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return "closes in " + (h ? h + " h " : "") + m + " min " + (s % 60) + " s";
  }

  // Counted in engine time (the server's clock when the element was rendered, plus the
  // wall time since): right when the engine runs a simulated clock too, to within a poll.
  function tick() {
    var wall = Date.now();
    document.querySelectorAll(".countdown[data-gate]").forEach(function (el) {
      if (!el.dataset.loaded) { el.dataset.loaded = String(wall); }
      var engineNow = Date.parse(el.dataset.now) + (wall - Number(el.dataset.loaded));
      var left = Date.parse(el.dataset.gate) - engineNow;
      el.textContent = fmt(left);
      // colour by urgency: under 5 minutes red, under 15 amber, else calm
      el.classList.toggle("urgent", left < 5 * 60000);
      el.classList.toggle("soon", left >= 5 * 60000 && left < 15 * 60000);
    });
  }

  function curve() {
    var holder = document.getElementById("curve");
    var data = document.getElementById("curve-data");
    if (!holder || !data || typeof uPlot === "undefined") { return; }
    var d = JSON.parse(data.textContent);
    var mw = d.curve.mw, price = d.curve.price;
    if (!mw.length) { holder.textContent = "The curve is empty (nothing offered)."; return; }
    var lo = Math.min.apply(null, mw.concat([0])), hi = Math.max.apply(null, mw.concat([0]));
    var f = d.fleet;
    if (f) {
      lo = Math.min(lo, -f.p_charge_p50_mw); hi = Math.max(hi, f.p_discharge_p50_mw);
    }
    var pad = Math.max(0.05, (hi - lo) * 0.05);
    var series = [{}, { label: "bid", stroke: "#0b57d0", width: 2, paths: uPlot.paths.linear() }];
    var xs = mw.slice(), cols = [price.slice()];
    function hline(y, label, color) {
      series.push({ label: label, stroke: color, dash: [6, 4], width: 1 });
      cols.push(xs.map(function () { return y; }));
    }
    if (d.outlook) {
      hline(d.outlook.price_p10, "price P10", "#8a8f96");
      hline(d.outlook.price_p50, "price P50", "#4a4a4a");
      hline(d.outlook.price_p90, "price P90", "#8a8f96");
    }
    var opts = {
      width: Math.max(320, holder.clientWidth || 600), height: 320,
      scales: { x: { time: false, range: [lo - pad, hi + pad] } },
      axes: [{ label: "MW (charge < 0 < discharge)" }, { label: "price / MWh" }],
      series: series,
      hooks: { draw: [function (u) {
        if (!f) { return; }
        var ctx = u.ctx; ctx.save(); ctx.setLineDash([2, 3]); ctx.strokeStyle = "#0a6b2e";
        [f.p_discharge_p50_mw, f.p_discharge_p90_mw, -f.p_charge_p50_mw, -f.p_charge_p90_mw].forEach(function (x) {
          var px = u.valToPos(x, "x", true);
          ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height); ctx.stroke();
        });
        ctx.restore();
      }] }
    };
    new uPlot(opts, [xs].concat(cols), holder);
  }

  function plan() {
    var holder = document.getElementById("plan");
    var data = document.getElementById("plan-data");
    if (!holder || !data || typeof uPlot === "undefined") { return; }
    var d = JSON.parse(data.textContent);
    function flat(v) { return d.t.map(function () { return v; }); }
    var opts = {
      width: Math.max(320, holder.clientWidth || 800), height: 320,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      axes: [{ label: "UTC" }, { label: "kW" }],
      series: [{},
        { label: "net load without", stroke: "#6b6f75", width: 2 },
        { label: "grid with plan", stroke: "#0b57d0", width: 2 },
        { label: "battery (+ discharge)", stroke: "#0a6b2e", width: 1 },
        { label: "peak without", stroke: "#6b6f75", dash: [6, 4] },
        { label: "peak with", stroke: "#0b57d0", dash: [6, 4] }]
    };
    var cols = [d.t, d.net_load_kw, d.grid_kw, d.p_kw, flat(d.peak_without_kw), flat(d.peak_kw)];
    if (d.soc) {  // plans stored before the SoC was kept have none
      opts.scales = { soc: { range: [0, 1] } };
      opts.axes.push({ scale: "soc", side: 1, label: "SoC", grid: { show: false } });
      opts.series.push({ label: "SoC (right)", stroke: "#7b3fb5", width: 2, scale: "soc" });
      cols.push(d.soc);
    }
    new uPlot(opts, cols, holder);
  }

  // One site's recent readings: power and load in kW, SoC on its own axis, and each
  // state change as a labelled red mark at its time (within the plotted range).
  function site() {
    var holder = document.getElementById("site-plot");
    var data = document.getElementById("site-data");
    if (!holder || !data || typeof uPlot === "undefined") { return; }
    var d = JSON.parse(data.textContent);
    var opts = {
      width: Math.max(320, holder.clientWidth || 600), height: 320,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      scales: { soc: { range: [0, 1] } },
      axes: [{ label: "UTC" }, { label: "kW" },
             { scale: "soc", side: 1, label: "SoC", grid: { show: false } }],
      series: [{},
        { label: "battery kW (+ discharge)", stroke: "#0b57d0", width: 2 },
        { label: "site load kW", stroke: "#6b6f75", width: 1 },
        { label: "SoC (right)", stroke: "#0a6b2e", width: 2, scale: "soc" }],
      hooks: { draw: [function (u) {
        var ctx = u.ctx, lo = u.scales.x.min, hi = u.scales.x.max;
        ctx.save(); ctx.strokeStyle = "#a50e0e"; ctx.fillStyle = "#a50e0e";
        ctx.font = "12px system-ui, sans-serif";
        d.events.forEach(function (e) {
          if (e.t < lo || e.t > hi) { return; }
          var px = u.valToPos(e.t, "x", true);
          ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height); ctx.stroke();
          ctx.fillText(e.label, px + 3, u.bbox.top + 12);
        });
        ctx.restore();
      }] }
    };
    new uPlot(opts, [d.ts, d.p_kw, d.site_load_kw, d.soc], holder);
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick(); setInterval(tick, 1000); curve(); plan(); site();
  });
  document.addEventListener("htmx:afterSwap", tick);
})();
