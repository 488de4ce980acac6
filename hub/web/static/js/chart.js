// Time-series charts on uPlot (vendored, loaded as a classic script: window.uPlot).
// A chart takes columns from /api/query (mean, with a min/max band when downsampled so peaks
// stay visible) and live points from the feed, trimmed to its time window.

const PALETTE = ["#2563eb", "#e11d48", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777"];

// Tick labels: plain up to 9,999, compact above (0, 5k, 10k, 15k, 20k; 1.5M), one suffix per
// axis, decided by its largest tick; as many decimals as the tick step needs.
export function tickLabels(splits, incr) {
  const top = Math.max(0, ...splits.map((v) => Math.abs(v)));
  const [div, suffix] = top >= 1e6 ? [1e6, "M"] : top >= 1e4 ? [1e3, "k"] : [1, ""];
  const step = Math.abs(incr || 0) / div;
  let digits = 0; // as many as the step has: 0.25 -> 2, 2.5 -> 1, 10 -> 0
  while (digits < 6 && Math.abs(step * 10 ** digits - Math.round(step * 10 ** digits)) > 1e-6 * 10 ** digits) digits++;
  return splits.map((v) => {
    if (v === null || v === undefined) return "";
    const n = v / div;
    const text = n.toLocaleString(undefined, { maximumFractionDigits: digits });
    return n === 0 ? "0" : `${text}${suffix}`;
  });
}

// Time ticks on one line, as precise as their spacing: 14:05:30, 14:05, or Dec 5.
export function timeLabels(splits, incr) {
  const options =
    incr >= 86400
      ? { month: "short", day: "numeric" }
      : incr >= 60
        ? { hour: "2-digit", minute: "2-digit" }
        : { hour: "2-digit", minute: "2-digit", second: "2-digit" };
  return splits.map((t) => {
    if (t === null || t === undefined) return "";
    const d = new Date(t * 1000);
    return incr >= 86400 ? d.toLocaleDateString(undefined, options) : d.toLocaleTimeString(undefined, options);
  });
}

// Half the widest time label, in CSS pixels.
function halfTimeLabel(u) {
  const axis = u.axes[0];
  let widest = 0;
  if (axis && axis._values && axis.font) {
    u.ctx.font = axis.font[0];
    for (const text of axis._values) widest = Math.max(widest, u.ctx.measureText(String(text)).width);
  }
  return Math.ceil(widest / 2 / (window.devicePixelRatio || 1));
}

// Room right of the plot for half the widest time label: a tick near the end stays whole.
function rightPadding(u) {
  return Math.max(12, halfTimeLabel(u) + 2);
}

// And left of a narrow y-axis ('80'), for a tick at the start.
function leftPadding(u) {
  const yAxis = u.axes[1];
  return Math.max(0, halfTimeLabel(u) + 2 - ((yAxis && yAxis._size) || 0));
}

// An axis as wide as its widest label (plus tick and gap), so no label is cut off.
function axisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size; // uPlot asks again after a resize: settle
  let widest = 0;
  if (values && values.length) {
    u.ctx.font = axis.font[0];
    for (const text of values) widest = Math.max(widest, u.ctx.measureText(String(text)).width);
  }
  return Math.ceil(widest / (window.devicePixelRatio || 1) + axis.ticks.size + axis.gap + 4);
}

// Dots on a line only while it has too few points to read as a line (one comfort score).
function sparse(u, sidx) {
  let n = 0;
  for (const v of u.data[sidx] || []) if (v !== null && v !== undefined && ++n > 3) return false;
  return true;
}

function latest(column) {
  if (!column) return null;
  for (let i = column.length - 1; i >= 0; i--) if (column[i] !== null && column[i] !== undefined) return column[i];
  return null;
}

// A legend entry: the value under the cursor while hovering, otherwise the latest one.
function legendValue(unit) {
  return (u, v, sidx, idx) => {
    const shown = idx === null || idx === undefined ? latest(u.data[sidx]) : v;
    if (shown === null || shown === undefined) return "–";
    const abs = Math.abs(shown);
    const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
    return `${shown.toLocaleString(undefined, { maximumFractionDigits: digits })}${unit ? ` ${unit}` : ""}`;
  };
}

// Time axis: the data's span, but at least `minSpan` seconds, ending at the newest point. A
// single point gets a minute: uPlot offers it a range of 1,000 days (the axis read Jun 2027-2029).
function xScale(minSpan) {
  return {
    time: true,
    range: (u, min, max) => {
      const x = u.data[0];
      if (!x || !x.length) {
        const now = Date.now() / 1000;
        return [now - 60, now];
      }
      const last = x[x.length - 1];
      if (x[0] === last) return [last - 60, last];
      return max - min < minSpan ? [max - minSpan, max] : [min, max]; // a zoom (drag) too
    },
  };
}

// uPlot's own padded range, kept within the limits (a percentage never runs past 100).
function yRange(limits) {
  if (!limits) return undefined;
  const [lo, hi] = limits;
  return (u, min, max) => {
    if (min === null || max === null) return [lo, hi];
    const [a, b] = window.uPlot.rangeNum(min, max, 0.1, true);
    const low = Math.max(lo, a);
    const high = Math.min(hi, b);
    return high > low ? [low, high] : [lo, hi];
  };
}

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export class TimeChart {
  // lines: [{label, unit?, color?}], band: draw min/max of line 0 as a band,
  // limits: [lowest, highest] the y-axis may show (default [0, 100] for a percentage),
  // minSpan: the shortest time axis in seconds (a live chart's first seconds show a minute)
  constructor(container, { title = "", lines, height = 200, band = false, windowMs = null, limits = null, minSpan = 60 }) {
    this.limits = limits || (lines[0].unit === "%" ? [0, 100] : null);
    this.minSpan = minSpan;
    this.container = container;
    this.title = title;
    this.lines = lines.map((line, i) => ({ ...line, color: line.color || PALETTE[i % PALETTE.length] }));
    this.height = height;
    this.band = band;
    this.windowMs = windowMs;
    this.x = [];
    this.ys = this.lines.map(() => []);
    this.lo = [];
    this.hi = [];
    this.u = null;
    this.pending = false;
    this.build();
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(container);
    this.onTheme = () => this.build();
    window.addEventListener("themechange", this.onTheme);
  }

  data() {
    const data = [this.x, ...this.ys];
    if (this.band) data.push(this.lo, this.hi);
    return data;
  }

  build() {
    if (!window.uPlot) {
      setTimeout(() => this.build(), 50);
      return;
    }
    if (this.u) this.u.destroy();
    const text = css("--text");
    const grid = css("--grid");
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const unit = this.lines[0].unit;
    const series = [
      {
        value: (u, v, sidx, idx) => {
          const t = idx === null || idx === undefined ? latest(u.data[0]) : v;
          if (t === null || t === undefined) return "–";
          const x = u.data[0];
          const long = x.length > 1 && x[x.length - 1] - x[0] > 20 * 3600;
          return long ? new Date(t * 1000).toLocaleString() : new Date(t * 1000).toLocaleTimeString();
        },
      },
      ...this.lines.map((line) => ({
        label: line.label,
        stroke: line.color,
        width: 2,
        spanGaps: true,
        points: { show: sparse, size: 6 },
        value: legendValue(line.unit),
      })),
    ];
    const bands = [];
    if (this.band) {
      const faint = `${this.lines[0].color}55`;
      const value = legendValue(unit);
      series.push({ label: "min", stroke: faint, width: 1, spanGaps: true, points: { show: false }, value });
      series.push({ label: "max", stroke: faint, width: 1, spanGaps: true, points: { show: false }, value });
      const n = this.lines.length;
      bands.push({ series: [n + 2, n + 1], fill: `${this.lines[0].color}22` });
    }
    const width = Math.max(200, this.container.clientWidth || 300);
    this.u = new window.uPlot(
      {
        title: unit ? `${this.title} (${unit})` : this.title,
        width,
        height: this.height,
        series,
        bands,
        axes: [
          { ...axis, space: 80, size: 32, values: (u, splits, i, space, incr) => timeLabels(splits, incr) },
          { ...axis, size: axisSize, values: (u, splits, i, space, incr) => tickLabels(splits, incr) },
        ],
        padding: [12, rightPadding, 0, leftPadding],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        scales: this.limits ? { x: xScale(this.minSpan), y: { range: yRange(this.limits) } } : { x: xScale(this.minSpan) },
      },
      this.data(),
      this.container,
    );
    this.container.uplot = this.u; // for tests and the curious: the drawn data
    this.showLatest();
    this.mark();
  }

  // The legend shows the latest values while the cursor is not over the plot.
  showLatest() {
    if (this.u && (this.u.cursor.idx === null || this.u.cursor.idx === undefined)) this.u.setLegend({ idx: null });
  }

  fit() {
    if (!this.u) return;
    const width = Math.max(200, this.container.clientWidth || 300);
    if (Math.abs(width - this.u.width) > 2) this.u.setSize({ width, height: this.height });
  }

  mark() {
    this.container.dataset.points = String(this.x.length);
  }

  // series: one /api/query series per line (null where there is none)
  setFromQuery(seriesPerLine) {
    const times = new Set();
    for (const s of seriesPerLine) if (s) for (const t of s.ts) times.add(t);
    const x = [...times].sort((a, b) => a - b);
    const index = new Map(x.map((t, i) => [t, i]));
    this.x = x.map((t) => t / 1000);
    this.ys = seriesPerLine.map((s) => {
      const col = new Array(x.length).fill(null);
      if (s) s.ts.forEach((t, i) => (col[index.get(t)] = s.mean[i]));
      return col;
    });
    if (this.band) {
      const s = seriesPerLine[0];
      this.lo = new Array(x.length).fill(null);
      this.hi = new Array(x.length).fill(null);
      if (s) {
        s.ts.forEach((t, i) => {
          this.lo[index.get(t)] = s.min[i];
          this.hi[index.get(t)] = s.max[i];
        });
      }
    }
    this.redraw();
  }

  // line index, time (ms), value: appended in time order, trimmed to the window
  push(line, tsMs, value) {
    const t = tsMs / 1000;
    const last = this.x.length ? this.x[this.x.length - 1] : -Infinity;
    if (t > last) {
      this.x.push(t);
      this.ys.forEach((col, i) => col.push(i === line ? value : null));
      if (this.band) {
        this.lo.push(line === 0 ? value : null);
        this.hi.push(line === 0 ? value : null);
      }
    } else {
      let i = this.x.length - 1;
      while (i > 0 && this.x[i] > t) i--;
      if (this.x[i] !== t) return; // late and out of order: the next query will have it
      this.ys[line][i] = value;
    }
    if (this.windowMs) {
      const cutoff = Date.now() / 1000 - this.windowMs / 1000;
      let drop = 0;
      while (drop < this.x.length && this.x[drop] < cutoff) drop++;
      if (drop) {
        this.x.splice(0, drop);
        this.ys.forEach((col) => col.splice(0, drop));
        if (this.band) {
          this.lo.splice(0, drop);
          this.hi.splice(0, drop);
        }
      }
    }
    this.scheduleRedraw();
  }

  scheduleRedraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.redraw();
    });
  }

  redraw() {
    if (this.u) this.u.setData(this.data());
    this.showLatest();
    this.mark();
  }

  destroy() {
    this.resize.disconnect();
    window.removeEventListener("themechange", this.onTheme);
    if (this.u) this.u.destroy();
  }
}
