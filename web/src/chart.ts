// The score time series of one change, drawn as inline SVG: the patch's score per date (gaps where it was not
// scored), its valid fraction as bars, the run's threshold, the event date and the dating interval.

import { svg } from "./dom";

export interface SeriesChart {
  dates: string[];
  scores: (number | null)[];
  valid: (number | null)[];
  event: string;
  earliest: string | null;
  latest: string | null;
  threshold: number | null;
  color: string;
}

const W = 560;
const H = 200;
const M = { left: 44, right: 12, top: 14, bottom: 40 };

function niceTicks(lo: number, hi: number, n = 4): number[] {
  const span = hi - lo || 1;
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) ticks.push(Number(t.toPrecision(6)));
  return ticks;
}

export function scoreChart(c: SeriesChart): SVGSVGElement {
  const n = c.dates.length;
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": "change score per date",
    "data-testid": "score-chart",
  });
  if (n === 0) return root;
  const finite = c.scores.filter((s): s is number => s !== null && Number.isFinite(s));
  let lo = Math.min(0, ...finite);
  let hi = Math.max(...finite, c.threshold ?? -Infinity, lo + 1e-6);
  hi += (hi - lo) * 0.08;
  if (!Number.isFinite(lo)) lo = 0;
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = (i: number): number => M.left + (n === 1 ? pw / 2 : (i / (n - 1)) * pw);
  const y = (v: number): number => M.top + ph - ((v - lo) / (hi - lo)) * ph;
  const index = (d: string | null): number => (d === null ? -1 : c.dates.indexOf(d));
  const step = n > 1 ? pw / (n - 1) : pw;

  // dating interval: from the last date before the change may have happened to the event date
  const i0 = index(c.earliest);
  const i1 = index(c.latest ?? c.event);
  if (i0 >= 0 && i1 >= 0) {
    const a = Math.min(i0, i1);
    const b = Math.max(i0, i1);
    root.append(
      svg(
        "rect",
        {
          x: x(a) - step * 0.35,
          y: M.top,
          width: x(b) - x(a) + step * 0.7,
          height: ph,
          class: "chart-interval",
          "data-testid": "chart-interval",
        },
        svg("title", {}, `dating interval ${c.earliest ?? "?"} – ${c.latest ?? c.event}`),
      ),
    );
  }

  // valid fraction bars along the bottom of the plot
  const vh = 18;
  c.valid.forEach((v, i) => {
    if (v === null) return;
    root.append(
      svg(
        "rect",
        {
          x: x(i) - Math.min(step * 0.3, 6),
          y: M.top + ph - vh * v,
          width: Math.min(step * 0.6, 12),
          height: vh * v,
          class: "chart-valid",
        },
        svg("title", {}, `${c.dates[i]}: ${(v * 100).toFixed(0)}% valid`),
      ),
    );
  });

  // axes and grid
  for (const t of niceTicks(lo, hi)) {
    root.append(svg("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), class: "chart-grid" }));
    root.append(svg("text", { x: M.left - 6, y: y(t) + 4, class: "chart-tick", "text-anchor": "end" }, String(t)));
  }
  const every = Math.max(1, Math.ceil(n / 8));
  c.dates.forEach((d, i) => {
    if (i % every !== 0) return;
    const anchor = x(i) > W - M.right - 24 ? "end" : "middle";
    root.append(
      svg("line", { x1: x(i), x2: x(i), y1: M.top + ph, y2: M.top + ph + 4, class: "chart-axis" }),
      svg("text", { x: x(i), y: H - M.bottom + 16, class: "chart-tick", "text-anchor": anchor }, d.slice(0, 7)),
    );
  });
  root.append(
    svg("line", { x1: M.left, x2: W - M.right, y1: M.top + ph, y2: M.top + ph, class: "chart-axis" }),
    svg("text", { x: 12, y: M.top + ph / 2, class: "chart-label", transform: `rotate(-90 12 ${M.top + ph / 2})`, "text-anchor": "middle" }, "score"),
  );

  // threshold
  if (c.threshold !== null && c.threshold > lo && c.threshold < hi) {
    root.append(
      svg(
        "line",
        { x1: M.left, x2: W - M.right, y1: y(c.threshold), y2: y(c.threshold), class: "chart-threshold" },
        svg("title", {}, `run threshold ${c.threshold.toPrecision(3)}`),
      ),
      svg("text", { x: W - M.right - 2, y: y(c.threshold) - 4, class: "chart-note", "text-anchor": "end" }, "threshold"),
    );
  }

  // event date
  const ie = index(c.event);
  if (ie >= 0) {
    root.append(
      svg("line", { x1: x(ie), x2: x(ie), y1: M.top, y2: M.top + ph, class: "chart-event", "data-testid": "chart-event" }),
      svg("text", { x: x(ie), y: H - 6, class: "chart-note chart-event-label", "text-anchor": "middle" }, `event ${c.event}`),
    );
  }

  // the series, with gaps where the patch was not scored
  let d = "";
  let pen = false;
  c.scores.forEach((s, i) => {
    if (s === null || !Number.isFinite(s)) {
      pen = false;
      return;
    }
    d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(s).toFixed(1)}`;
    pen = true;
  });
  root.append(svg("path", { d, class: "chart-line", stroke: c.color }));
  c.scores.forEach((s, i) => {
    if (s === null || !Number.isFinite(s)) return;
    root.append(
      svg(
        "circle",
        { cx: x(i), cy: y(s), r: i === ie ? 4.5 : 2.8, class: i === ie ? "chart-dot chart-dot-event" : "chart-dot", fill: c.color },
        svg("title", {}, `${c.dates[i]}: score ${s.toPrecision(3)}`),
      ),
    );
  });
  return root;
}
