// Overwatch charts: small inline SVG line, waterfall and lane charts. No library, nothing fetched.
// Every series is named in a legend and drawn with its own dash pattern, so no colour carries meaning alone.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fb0", "#c0504d", "#4f9a52", "#8064a2", "#d08a2e", "#3aa1a8", "#7f7f7f"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3", "4 4", "1 2", "10 4"];

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

function extent(values) {
  const xs = values.filter(finite);
  if (!xs.length) return null;
  let lo = Math.min(...xs), hi = Math.max(...xs);
  if (lo === hi) { lo -= 1; hi += 1; }
  return [lo, hi];
}

function tickLabel(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return a >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(2);
}

// Five evenly spaced ticks, or for a count axis (epochs, episodes, versions) whole numbers only.
function xTicks(xr, integer) {
  if (!integer) return [0, 1, 2, 3, 4].map((i) => xr[0] + ((xr[1] - xr[0]) * i) / 4);
  const lo = Math.ceil(xr[0]), hi = Math.floor(xr[1]);
  const step = Math.max(1, Math.ceil((hi - lo) / 5));
  const ticks = [];
  for (let v = lo; v <= hi; v += step) ticks.push(v);
  return ticks;
}

// series: [{name, points: [[x, y], ...]}]; points with a non-finite y are gaps, not zeros.
function lineChart(series, opts) {
  const o = Object.assign({ width: 560, height: 240, xLabel: "", yLabel: "", id: "", integerX: false }, opts || {});
  const pad = { l: 52, r: 12, t: 12, b: 36 };
  const svg = svgEl("svg", { viewBox: `0 0 ${o.width} ${o.height}`, class: "chart", role: "img" });
  if (o.id) svg.setAttribute("id", o.id);
  svg.setAttribute("aria-label", o.yLabel + " against " + o.xLabel);
  const all = series.flatMap((s) => s.points);
  const xr = extent(all.map((p) => p[0]));
  const yr = extent(all.map((p) => p[1]));
  if (!xr || !yr) {
    svg.appendChild(svgEl("text", { x: o.width / 2, y: o.height / 2, "text-anchor": "middle", class: "muted" },
      "no data yet"));
    return svg;
  }
  const W = o.width - pad.l - pad.r, H = o.height - pad.t - pad.b;
  const sx = (x) => pad.l + ((x - xr[0]) / (xr[1] - xr[0])) * W;
  const sy = (y) => pad.t + H - ((y - yr[0]) / (yr[1] - yr[0])) * H;
  svg.appendChild(svgEl("rect", { x: pad.l, y: pad.t, width: W, height: H, class: "plot-area" }));
  for (let i = 0; i <= 4; i++) {
    const yv = yr[0] + ((yr[1] - yr[0]) * i) / 4;
    svg.appendChild(svgEl("line", { x1: pad.l, x2: pad.l + W, y1: sy(yv), y2: sy(yv), class: "grid" }));
    svg.appendChild(svgEl("text", { x: pad.l - 4, y: sy(yv) + 4, "text-anchor": "end", class: "tick" }, tickLabel(yv)));
  }
  for (const xv of xTicks(xr, o.integerX)) {
    svg.appendChild(svgEl("text", { x: sx(xv), y: pad.t + H + 14, "text-anchor": "middle", class: "tick" },
      o.integerX ? String(xv) : tickLabel(xv)));
  }
  svg.appendChild(svgEl("text", { x: pad.l + W / 2, y: o.height - 4, "text-anchor": "middle", class: "axis" },
    o.xLabel));
  svg.appendChild(svgEl("text", { x: 12, y: pad.t + H / 2, "text-anchor": "middle", class: "axis",
    transform: `rotate(-90 12 ${pad.t + H / 2})` }, o.yLabel));
  series.forEach((s, k) => {
    let d = "", pen = false;
    for (const [x, y] of s.points) {
      if (!finite(x) || !finite(y)) { pen = false; continue; }
      d += (pen ? "L" : "M") + sx(x).toFixed(1) + " " + sy(y).toFixed(1) + " ";
      pen = true;
    }
    const path = svgEl("path", { d: d.trim(), fill: "none", stroke: PALETTE[k % PALETTE.length],
      "stroke-width": 2, "stroke-dasharray": DASHES[k % DASHES.length], "data-series": s.name });
    path.appendChild(svgEl("title", {}, s.name));
    svg.appendChild(path);
    const shown = s.points.filter(([x, y]) => finite(x) && finite(y));
    if (shown.length <= 60) {  // markers, so a single point (or a short series) is visible too
      for (const [x, y] of shown) {
        svg.appendChild(svgEl("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: PALETTE[k % PALETTE.length] }));
      }
    }
  });
  return svg;
}

function legend(names) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  names.forEach((name, k) => {
    const li = document.createElement("li");
    const sw = svgEl("svg", { width: 28, height: 10 });
    sw.appendChild(svgEl("line", { x1: 0, x2: 28, y1: 5, y2: 5, stroke: PALETTE[k % PALETTE.length],
      "stroke-width": 2, "stroke-dasharray": DASHES[k % DASHES.length] }));
    li.appendChild(sw);
    li.appendChild(document.createTextNode(" " + name));
    ul.appendChild(li);
  });
  return ul;
}

// bars: [{label, kind, start, end, delta}] from the API; kind base/seed/remainder/total. The axis is cut to the
// range the bars move in (so a 1 pp contribution is visible beside a 90 % base); the cut is drawn and labelled.
function waterfallChart(bars, opts) {
  const o = Object.assign({ width: 560, height: 260 }, opts || {});
  const pad = { l: 52, r: 12, t: 16, b: 56 };
  const svg = svgEl("svg", { viewBox: `0 0 ${o.width} ${o.height}`, class: "chart", id: "waterfall", role: "img" });
  svg.setAttribute("aria-label", "counterfactual waterfall");
  const moving = bars.flatMap((b) => (b.kind === "base" || b.kind === "total" ? [b.end] : [b.start, b.end]));
  const span0 = extent(moving);
  const span = span0[1] - span0[0];
  const yr = [Math.max(0, span0[0] - 0.5 * span), span0[1] + 0.15 * span];
  const W = o.width - pad.l - pad.r, H = o.height - pad.t - pad.b;
  const clampY = (y) => Math.min(Math.max(y, yr[0]), yr[1]);
  const sy = (y) => pad.t + H - ((clampY(y) - yr[0]) / (yr[1] - yr[0])) * H;
  const step = W / Math.max(bars.length, 1);
  for (let i = 0; i <= 4; i++) {
    const yv = yr[0] + ((yr[1] - yr[0]) * i) / 4;
    svg.appendChild(svgEl("line", { x1: pad.l, x2: pad.l + W, y1: sy(yv), y2: sy(yv), class: "grid" }));
    svg.appendChild(svgEl("text", { x: pad.l - 4, y: sy(yv) + 4, "text-anchor": "end", class: "tick" }, yv.toFixed(1)));
  }
  bars.forEach((b, i) => {
    const x = pad.l + i * step + step * 0.15, w = step * 0.7;
    const top = sy(Math.max(b.start, b.end)), h = Math.max(Math.abs(sy(b.start) - sy(b.end)), 1);
    const moves = b.kind === "seed" || b.kind === "remainder";
    const cls = moves ? (b.delta >= 0 ? "bar-up" : "bar-down") : "bar-total";
    const rect = svgEl("rect", { x, y: top, width: w, height: h, class: cls, "data-label": b.label,
      "data-delta": b.delta });
    rect.appendChild(svgEl("title", {}, `${b.label}: ${moves && b.delta >= 0 ? "+" : ""}${b.delta.toFixed(2)}`));
    svg.appendChild(rect);
    const sign = moves && b.delta >= 0 ? "+" : "";
    svg.appendChild(svgEl("text", { x: x + w / 2, y: top - 3, "text-anchor": "middle", class: "tick" },
      sign + b.delta.toFixed(2)));
    svg.appendChild(svgEl("text", { x: x + w / 2, y: pad.t + H + 14, "text-anchor": "middle", class: "tick" },
      b.label));
  });
  svg.appendChild(svgEl("text", { x: 12, y: pad.t + H / 2, "text-anchor": "middle", class: "axis",
    transform: `rotate(-90 12 ${pad.t + H / 2})` }, "accuracy (%)"));
  svg.appendChild(svgEl("text", { x: pad.l, y: o.height - 6, class: "tick" },
    yr[0] > 0 ? `axis cut: starts at ${yr[0].toFixed(1)} %, not 0` : ""));
  return svg;
}

// lanes: [{lane, bars: [{from, to, label, stage}]}] over epochs 1..maxEpoch; the stage is written on each bar.
function swimlane(lanes, maxEpoch, opts) {
  const o = Object.assign({ width: 560, laneHeight: 22, id: "" }, opts || {});
  const pad = { l: 52, r: 12, t: 6, b: 22 };
  const height = pad.t + pad.b + lanes.length * o.laneHeight;
  const svg = svgEl("svg", { viewBox: `0 0 ${o.width} ${height}`, class: "chart swimlane", role: "img" });
  if (o.id) svg.setAttribute("id", o.id);
  const W = o.width - pad.l - pad.r;
  const sx = (e) => pad.l + ((e - 1) / Math.max(maxEpoch, 1)) * W;
  lanes.forEach((lane, i) => {
    const y = pad.t + i * o.laneHeight;
    svg.appendChild(svgEl("text", { x: pad.l - 4, y: y + o.laneHeight * 0.7, "text-anchor": "end", class: "tick" },
      lane.lane));
    svg.appendChild(svgEl("line", { x1: pad.l, x2: pad.l + W, y1: y + o.laneHeight - 1, y2: y + o.laneHeight - 1,
      class: "grid" }));
    let pending = "";  // a seed's blueprint, written on its first segment wide enough to hold it
    let lastEnd = pad.l;
    const outside = () => {  // a seed too short for its name: the name goes just after its last segment
      if (pending) svg.appendChild(svgEl("text", { x: lastEnd + 3, y: y + o.laneHeight * 0.68, class: "tick" }, pending));
      pending = "";
    };
    for (const bar of lane.bars) {
      if (bar.label) {
        outside();
        pending = bar.label;
      }
      const x = sx(bar.from), w = Math.max(sx(bar.to + 1) - x, 3);
      const rect = svgEl("rect", { x, y: y + 3, width: w, height: o.laneHeight - 6,
        class: "stage stage-" + String(bar.stage).toLowerCase(), "data-stage": bar.stage });
      rect.appendChild(svgEl("title", {}, `${bar.label ? bar.label + " " : ""}${bar.stage} (epochs ${bar.from}–${bar.to})`));
      svg.appendChild(rect);
      const fits = (words) => w > words.length * 6.2 + 6;  // 10 px text; what does not fit stays in the tooltip
      const both = pending ? `${pending} · ${bar.stage}` : "";
      const words = both && fits(both) ? both : fits(bar.stage) ? bar.stage : "";
      if (words) {
        svg.appendChild(svgEl("text", { x: x + 3, y: y + o.laneHeight * 0.68, class: "bar-label" }, words));
        if (words === both) pending = "";
      }
      lastEnd = x + w;
    }
    outside();
  });
  for (let i = 0; i <= 4; i++) {
    const e = 1 + Math.round(((maxEpoch - 1) * i) / 4);
    svg.appendChild(svgEl("text", { x: sx(e), y: height - 6, "text-anchor": "middle", class: "tick" }, "e" + e));
  }
  return svg;
}

const STAGES = ["GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED", "PRUNED", "EMBARGOED"];

// The stage colours, named: the swimlanes' key (a short segment shows its stage only in its tooltip).
function stageLegend() {
  const ul = document.createElement("ul");
  ul.className = "legend";
  ul.id = "stage-legend";
  for (const stage of STAGES) {
    const li = document.createElement("li");
    const sw = svgEl("svg", { width: 14, height: 10, class: "swimlane" });
    sw.appendChild(svgEl("rect", { x: 0, y: 0, width: 14, height: 10, class: "stage stage-" + stage.toLowerCase() }));
    li.appendChild(sw);
    li.appendChild(document.createTextNode(" " + stage));
    ul.appendChild(li);
  }
  return ul;
}

window.OverwatchCharts = { lineChart, legend, waterfallChart, swimlane, stageLegend };
