// Time-series charts on uPlot (vendored, loaded as a classic script: window.uPlot).
// A chart takes columns from /api/query (mean, with a min/max band when downsampled so peaks
// stay visible) and live points from the feed, trimmed to its time window.

const PALETTE = ["#2563eb", "#e11d48", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777"];

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export class TimeChart {
  // lines: [{label, unit?, color?}], band: draw min/max of line 0 as a band
  constructor(container, { title = "", lines, height = 200, band = false, windowMs = null }) {
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
      {},
      ...this.lines.map((line) => ({
        label: line.label,
        stroke: line.color,
        width: 2,
        spanGaps: true,
        points: { show: false },
        value: (u, v) => (v === null || v === undefined ? "–" : `${v.toFixed(2)}${line.unit ? ` ${line.unit}` : ""}`),
      })),
    ];
    const bands = [];
    if (this.band) {
      const faint = `${this.lines[0].color}55`;
      series.push({ label: "min", stroke: faint, width: 1, spanGaps: true, points: { show: false } });
      series.push({ label: "max", stroke: faint, width: 1, spanGaps: true, points: { show: false } });
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
        axes: [axis, { ...axis, size: 50 }],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        scales: { x: { time: true } },
      },
      this.data(),
      this.container,
    );
    this.container.uplot = this.u; // for tests and the curious: the drawn data
    this.mark();
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
    this.mark();
  }

  destroy() {
    this.resize.disconnect();
    window.removeEventListener("themechange", this.onTheme);
    if (this.u) this.u.destroy();
  }
}
