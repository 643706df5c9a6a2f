// Gate countdowns, the plots (bid curve, peak-shaving plan, site readings, fleet power
// and energy, dispatch target against delivered), and a guard that keeps polling from
// wiping a selection the operator is making.
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

  // Time axes read 24-hour UTC ("14:05", with the date where a day starts), never 12-hour
  // am/pm; a legend shows its labels only (values while hovering would read "--" before).
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function utcLabel(ts, withDate, withSeconds) {
    var d = new Date(ts * 1e3);
    var hm = two(d.getUTCHours()) + ":" + two(d.getUTCMinutes());
    if (withSeconds) { hm += ":" + two(d.getUTCSeconds()); }
    return withDate ? two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) + " " + hm : hm;
  }
  function utcAxis(label) {
    return {
      label: label || "UTC",
      space: 60,
      values: function (u, splits) {
        var lastDay = null;
        var seconds = splits.length > 1 && splits[1] - splits[0] < 60;
        return splits.map(function (ts) {
          var day = Math.floor(ts / 86400);
          var first = lastDay === null || day !== lastDay;
          lastDay = day;
          return utcLabel(ts, first, seconds);
        });
      }
    };
  }
  var NO_POINTS = { show: false };
  var LEGEND = { live: false };
  // ticks placed on round UTC times too (the labels are UTC whatever the browser's zone)
  function UTC_DATE(ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }
  window.vppUtcLabel = utcLabel;

  function nowLine(t) {
    return function (u) {
      if (t < u.scales.x.min || t > u.scales.x.max) { return; }
      var ctx = u.ctx, px = u.valToPos(t, "x", true);
      ctx.save(); ctx.strokeStyle = "#a50e0e"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height);
      ctx.stroke(); ctx.restore();
    };
  }

  function panel(holder, title) {
    var box = document.createElement("figure");
    box.className = "plot";
    var cap = document.createElement("figcaption");
    cap.textContent = title;
    box.appendChild(cap);
    var area = document.createElement("div");
    box.appendChild(area);
    holder.appendChild(box);
    return area;
  }

  // Each group's recorded aggregate: net power, the P50..P90 band of what it can discharge
  // (above zero) and charge (below), and its dischargeable energy on the right axis.
  function fleet() {
    var holder = document.getElementById("fleet-plots");
    var data = document.getElementById("fleet-data");
    if (!holder || !data || typeof uPlot === "undefined") { return; }
    var d = JSON.parse(data.textContent);
    Object.keys(d.groups).sort().forEach(function (name) {
      var g = d.groups[name];
      var area = panel(holder, name);
      var opts = {
        width: Math.max(320, holder.clientWidth || 800), height: 260, legend: LEGEND, tzDate: UTC_DATE,
        axes: [utcAxis(), { label: "kW" }, { scale: "kwh", side: 1, label: "kWh", grid: { show: false } }],
        series: [{},
          { label: "net power (+ discharge)", stroke: "#0b57d0", width: 2, points: NO_POINTS },
          { label: "discharge P50", stroke: "#0a6b2e", width: 1, points: NO_POINTS },
          { label: "discharge P90", stroke: "#0a6b2e", width: 1, dash: [4, 3], points: NO_POINTS },
          { label: "charge P50", stroke: "#8a5a00", width: 1, points: NO_POINTS },
          { label: "charge P90", stroke: "#8a5a00", width: 1, dash: [4, 3], points: NO_POINTS },
          { label: "energy out (right)", stroke: "#7b3fb5", width: 2, scale: "kwh", points: NO_POINTS },
          { label: "energy low", stroke: "#b99ad8", width: 1, scale: "kwh", dash: [2, 3], points: NO_POINTS },
          { label: "energy high", stroke: "#b99ad8", width: 1, scale: "kwh", dash: [2, 3], points: NO_POINTS }],
        bands: [
          { series: [2, 3], fill: "rgba(10,107,46,0.12)" },
          { series: [4, 5], fill: "rgba(138,90,0,0.12)" },
          { series: [8, 7], fill: "rgba(123,63,181,0.10)" }],
        hooks: { draw: [nowLine(d.now)] }
      };
      new uPlot(opts, [g.t, g.p_net, g.d50, g.d90, g.c50, g.c90, g.e, g.e_lo, g.e_hi], area);
    });
  }

  // Each group's intervals as steps: the target, the measured mean and, once closed, the
  // shortfall a meter would count.
  function dispatchChart() {
    var holder = document.getElementById("dispatch-plots");
    var data = document.getElementById("dispatch-data");
    if (!holder || !data || typeof uPlot === "undefined") { return; }
    var d = JSON.parse(data.textContent);
    Object.keys(d.groups).sort().forEach(function (name) {
      var g = d.groups[name];
      // each interval drawn from its start to its end: a point at each edge
      var t = [], target = [], got = [], short = [];
      for (var k = 0; k < g.t0.length; k++) {
        [g.t0[k], g.t1[k] - 1].forEach(function (x) {
          t.push(x); target.push(g.target[k]); got.push(g.delivered[k]); short.push(g.short[k]);
        });
        t.push(g.t1[k] - 0.5); target.push(null); got.push(null); short.push(null);
      }
      var area = panel(holder, name);
      var opts = {
        width: Math.max(320, holder.clientWidth || 800), height: 240, legend: LEGEND, tzDate: UTC_DATE,
        axes: [utcAxis(), { label: "kW (+ discharge)" }],
        // the window always shows now, also when every interval is ahead or behind it
        scales: { x: { range: function (u, lo, hi) {
          return [Math.min(lo, d.now - 300), Math.max(hi, d.now + 300)];
        } } },
        series: [{},
          { label: "target", stroke: "#4a4a4a", width: 2, dash: [6, 4], points: NO_POINTS },
          { label: "delivered (measured mean)", stroke: "#0b57d0", width: 2, points: NO_POINTS },
          { label: "shortfall", stroke: "#a50e0e", width: 2, fill: "rgba(165,14,14,0.12)", points: NO_POINTS }],
        hooks: { draw: [nowLine(d.now)] }
      };
      new uPlot(opts, [t, target, got, short], area);
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
      width: Math.max(320, holder.clientWidth || 600), height: 320, legend: LEGEND,
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
      width: Math.max(320, holder.clientWidth || 800), height: 320, legend: LEGEND,
      tzDate: UTC_DATE,
      axes: [utcAxis(), { label: "kW" }],
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
      width: Math.max(320, holder.clientWidth || 600), height: 320, legend: LEGEND,
      tzDate: UTC_DATE,
      scales: { soc: { range: [0, 1] } },
      axes: [utcAxis(), { label: "kW" },
             { scale: "soc", side: 1, label: "SoC", grid: { show: false } }],
      series: [{},
        { label: "battery kW (+ discharge)", stroke: "#0b57d0", width: 2 },
        { label: "site load kW", stroke: "#6b6f75", width: 1 },
        { label: "SoC (right)", stroke: "#0a6b2e", width: 2, scale: "soc" }],
      hooks: { draw: [function (u) {
        var ctx = u.ctx, lo = u.scales.x.min, hi = u.scales.x.max;
        ctx.save(); ctx.strokeStyle = "#a50e0e"; ctx.fillStyle = "#a50e0e";
        ctx.font = "12px system-ui, sans-serif";
        // labels on up to three rows, a label skipped when its row has no room left (its
        // line still drawn): state changes close in time no longer print over each other
        var ends = [-Infinity, -Infinity, -Infinity];
        d.events.slice().sort(function (a, b) { return a.t - b.t; }).forEach(function (e) {
          if (e.t < lo || e.t > hi) { return; }
          var px = u.valToPos(e.t, "x", true);
          ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height); ctx.stroke();
          var w = ctx.measureText(e.label).width;
          for (var row = 0; row < ends.length; row++) {
            if (px + 3 > ends[row] + 6) {
              ctx.fillText(e.label, px + 3, u.bbox.top + 12 + 14 * row);
              ends[row] = px + 3 + w;
              break;
            }
          }
        });
        ctx.restore();
      }] }
    };
    new uPlot(opts, [d.ts, d.p_kw, d.site_load_kw, d.soc], holder);
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick(); setInterval(tick, 1000); curve(); plan(); site(); fleet(); dispatchChart();
  });
  document.addEventListener("htmx:afterSwap", tick);
})();
