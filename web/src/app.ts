// The workbench: header, map (left), ranked list (right), the change drawer and the other pages.

import * as api from "./api";
import type { ChangeDetail, ChangeItem, ChangesQuery, LabelOrNone, RunInfo, SimilarResult, SortKey, TypeNode } from "./api";
import { scoreChart } from "./chart";
import { clear, fmt, h, thumb } from "./dom";
import { type FootprintMode, MapView } from "./map";
import { evaluationPage, explorePage, typesPage } from "./pages";
import { beforeAfter, interval, labelBadge, labelButtons, metricsLine, shortType, statusBadge, typeChip } from "./widgets";

type Page = "map" | "types" | "evaluation" | "explore";

interface Filters {
  sort: SortKey;
  order: "asc" | "desc" | "";
  clusters: Set<number>;
  dateFrom: string;
  dateTo: string;
  status: "all" | "confirmed" | "pending";
  label: "all" | "relevant" | "irrelevant" | "unlabelled";
  bbox: [number, number, number, number] | null;
}

const PAGE_SIZE = 50;

/** Changes are addressed by run and event id (two runs of one AOI may share event ids). */
const key = (run: string, eventId: string): string => `${run}\n${eventId}`;

function debounce<A extends unknown[]>(fn: (...args: A) => void, ms: number): (...args: A) => void {
  let timer: number | undefined;
  return (...args: A) => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => fn(...args), ms);
  };
}

export class App {
  private runs: RunInfo[] = [];
  private run!: RunInfo;
  private page: Page = "map";
  private filters: Filters = this.defaultFilters();
  private items: ChangeItem[] = [];
  private total = 0;
  private listToken = 0;
  private detail: ChangeDetail | null = null;
  private similar: SimilarResult | null = null;
  private similarOptions = { k: 20, useFeedback: true, thisRun: false };
  private eventLabels = new Map<string, api.Label>();
  private typeLabels = new Map<number, api.Label>();
  private trees = new Map<string, TypeNode>();
  private itemCache = new Map<string, ChangeItem>();
  private mapView!: MapView;

  // elements
  private readonly root: HTMLElement;
  private readonly runSelect = h("select", { "data-testid": "run-select", "aria-label": "run (AOI)" });
  private readonly nav = h("nav", { class: "tabs" });
  private readonly counts = h("div", { class: "counts", "data-testid": "run-counts" });
  private readonly exportLink = h(
    "a",
    { class: "button ghost", "data-testid": "export-link", download: "", title: "labelled changes as GeoParquet (opens in QGIS)" },
    "Export labels",
  );
  private readonly workspace = h("main", { class: "workspace" });
  private readonly pageHost = h("main", { class: "page", hidden: true });
  private readonly mapEl = h("div", { class: "map", "data-testid": "map" });
  private readonly mapBar = h("div", { class: "map-bar" });
  private readonly listPanel = h("section", { class: "list-panel", "aria-label": "ranked changes" });
  private readonly listControls = h("div", { class: "list-controls" });
  private readonly listSummary = h("div", { class: "list-summary", "data-testid": "list-summary" });
  private readonly list = h("ol", { class: "change-list", "data-testid": "change-list" });
  private readonly more = h("button", { type: "button", class: "button ghost more", "data-testid": "list-more" }, "Show more");
  private readonly drawer = h("aside", { class: "drawer", "data-testid": "detail", hidden: true, "aria-label": "change" });
  private readonly toastEl = h("div", { class: "toast", role: "status", "aria-live": "polite" });

  constructor(root: HTMLElement) {
    this.root = root;
  }

  async start(): Promise<void> {
    this.renderShell();
    try {
      this.runs = (await api.getRuns()).runs;
    } catch (e) {
      this.fatal(`Could not load the runs: ${String(e)}`);
      return;
    }
    if (this.runs.length === 0) {
      this.fatal("No runs are served. Start the workbench with `changescope serve RUN_DIR`.");
      return;
    }
    const names = this.runs.map((r) => r.name);
    for (const run of this.runs) {
      const name = names.filter((n) => n === run.name).length > 1 ? run.id : run.name;
      this.runSelect.append(h("option", { value: run.id }, `${name} · ${run.aoi} · ${run.n_events} changes`));
    }
    this.runSelect.addEventListener("change", () => this.navigate({ run: this.runSelect.value, change: null }));
    this.mapView = new MapView(this.mapEl, {
      select: (id) => this.navigate({ change: id }),
      area: (bbox) => {
        this.filters.bbox = bbox;
        this.renderListControls();
        void this.loadList();
      },
      labelOf: (id) => this.labelOf(id),
    });
    window.addEventListener("hashchange", () => void this.route());
    window.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !this.drawer.hidden) this.navigate({ change: null });
    });
    await this.route();
  }

  // ------------------------------------------------------------------ routing

  private parseHash(): { page: Page; run: string | null; change: string | null } {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?", 2) as [string, string | undefined];
    const params = new URLSearchParams(query ?? "");
    const page = (["map", "types", "evaluation", "explore"] as Page[]).find((p) => p === path) ?? "map";
    return { page, run: params.get("run"), change: params.get("change") };
  }

  /** Change the route; anything not given stays as it is. */
  navigate(to: { page?: Page; run?: string; change?: string | null }): void {
    const now = this.parseHash();
    const page = to.page ?? now.page;
    const run = to.run ?? now.run ?? this.run.id;
    const change = to.change === undefined ? now.change : to.change;
    const params = new URLSearchParams({ run });
    if (change && page === "map") params.set("change", change);
    const hash = `#/${page}?${params.toString()}`;
    if (location.hash !== hash) location.hash = hash;
    else void this.route();
  }

  private async route(): Promise<void> {
    const { page, run: runId, change } = this.parseHash();
    const run = this.runs.find((r) => r.id === runId) ?? this.runs[0]!;
    if (this.run !== run) await this.setRun(run);
    this.page = page;
    for (const a of this.nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.page === page);
    this.workspace.hidden = page !== "map";
    this.pageHost.hidden = page === "map";
    if (page === "map") {
      this.mapView.map.updateSize();
      if (change && change !== this.detail?.item.event_id) await this.openChange(change);
      else if (!change && this.detail) this.closeChange();
    } else {
      if (this.detail) this.closeChange();
      await this.renderPage();
    }
  }

  private async setRun(run: RunInfo): Promise<void> {
    this.run = run;
    this.runSelect.value = run.id;
    this.filters = this.defaultFilters();
    this.detail = null;
    this.similar = null;
    this.drawer.hidden = true;
    this.workspace.classList.remove("with-drawer");
    this.exportLink.href = api.urls.export(run.id);
    this.exportLink.setAttribute("download", `${run.id}_labels.parquet`);
    this.renderCounts();
    this.mapView.setRun(run);
    this.renderMapBar();
    this.renderListControls();
    await Promise.all([this.loadList(), this.loadLabels()]);
  }

  // ------------------------------------------------------------------ shell

  private renderShell(): void {
    const pages: [Page, string][] = [
      ["map", "Changes"],
      ["types", "Change types"],
      ["evaluation", "Evaluation"],
      ["explore", "Explore"],
    ];
    for (const [page, text] of pages) {
      const a = h("a", { href: `#/${page}`, "data-page": page, "data-testid": `nav-${page}` }, text);
      a.addEventListener("click", (e) => {
        e.preventDefault();
        this.navigate({ page, change: null });
      });
      this.nav.append(a);
    }
    const header = h(
      "header",
      { class: "topbar" },
      h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }), h("span", {}, "changescope"), h("small", {}, "workbench")),
      h("label", { class: "run-picker" }, h("span", {}, "Run"), this.runSelect),
      this.nav,
      h("div", { class: "spacer" }),
      this.counts,
      this.exportLink,
    );
    const mapPanel = h("section", { class: "map-panel", "aria-label": "map" }, this.mapBar, this.mapEl, this.legend());
    this.listPanel.append(this.listControls, this.listSummary, h("div", { class: "list-scroll" }, this.list, this.more));
    this.more.addEventListener("click", () => void this.loadList(true));
    this.workspace.append(mapPanel, this.listPanel, this.drawer);
    this.root.append(header, this.workspace, this.pageHost, this.toastEl);
  }

  private legend(): HTMLElement {
    return h(
      "div",
      { class: "map-legend" },
      h("span", {}, h("i", { class: "lg lg-confirmed" }), "confirmed"),
      h("span", {}, h("i", { class: "lg lg-pending" }), "pending"),
      h("span", {}, h("i", { class: "lg lg-similar" }), "similar"),
      h("span", {}, h("i", { class: "lg lg-irrelevant" }), "irrelevant"),
      h("span", { class: "hint" }, "Ctrl-drag: draw an area"),
    );
  }

  private fatal(message: string): void {
    clear(this.workspace);
    this.workspace.append(h("div", { class: "fatal", "data-testid": "fatal" }, message));
  }

  toast(message: string, error = false): void {
    this.toastEl.textContent = message;
    this.toastEl.className = `toast show${error ? " error" : ""}`;
    window.clearTimeout(Number(this.toastEl.dataset.timer));
    this.toastEl.dataset.timer = String(window.setTimeout(() => (this.toastEl.className = "toast"), error ? 6000 : 2500));
  }

  private renderCounts(): void {
    const r = this.run;
    clear(this.counts);
    this.counts.append(
      h("span", {}, h("b", {}, String(r.n_events)), " changes"),
      h("span", { class: "opt" }, h("b", {}, String(r.n_confirmed)), " confirmed"),
      h("span", { class: "opt" }, h("b", {}, String(r.n_pending)), " pending"),
      h("span", { class: "opt" }, h("b", {}, String(r.dates.length)), " dates"),
      h("span", { "data-testid": "label-count" }, h("b", {}, String(this.eventLabels.size + this.typeLabels.size)), " labels"),
    );
  }

  // ------------------------------------------------------------------ map bar

  private renderMapBar(): void {
    const run = this.run;
    clear(this.mapBar);
    const n = run.dates.length;
    const dateLabel = h("output", { class: "date-label", "data-testid": "date-label" }, run.dates[this.mapView.getDate()] ?? "");
    const slider = h("input", {
      type: "range",
      min: 0,
      max: Math.max(0, n - 1),
      step: 1,
      value: this.mapView.getDate(),
      "data-testid": "date-slider",
      "aria-label": "date",
    });
    const stepBtn = (delta: number, text: string): HTMLButtonElement => {
      const b = h("button", { type: "button", class: "icon-btn", title: delta < 0 ? "previous date" : "next date" }, text);
      b.addEventListener("click", () => {
        slider.value = String(Math.min(n - 1, Math.max(0, Number(slider.value) + delta)));
        slider.dispatchEvent(new Event("input"));
      });
      return b;
    };
    slider.addEventListener("input", () => {
      const i = Number(slider.value);
      dateLabel.textContent = run.dates[i] ?? "";
      this.mapView.setDate(i);
    });
    this.mapBar.dataset.dateSlider = "";
    (this.mapBar as HTMLElement & { setDate?: (i: number) => void }).setDate = (i: number) => {
      slider.value = String(i);
      dateLabel.textContent = run.dates[i] ?? "";
      this.mapView.setDate(i);
    };

    const [lo, hi] = run.score_range;
    const thr = run.threshold ?? lo;
    const scoreOn = h("input", { type: "checkbox", checked: true, "data-testid": "score-toggle" });
    const opacity = h("input", { type: "range", min: 0, max: 1, step: 0.05, value: 0.7, "data-testid": "score-opacity", "aria-label": "score opacity" });
    const threshold = h("input", {
      type: "range",
      min: lo,
      max: hi,
      step: (hi - lo) / 100 || 0.01,
      value: thr,
      "data-testid": "score-threshold",
      "aria-label": "score threshold",
    });
    const thrOut = h("output", { class: "num" }, fmt(thr, 1));
    const applyScore = debounce(() => {
      this.mapView.setScore(scoreOn.checked, Number(opacity.value), Number(threshold.value));
    }, 150);
    scoreOn.addEventListener("change", () => {
      opacity.disabled = threshold.disabled = !scoreOn.checked;
      applyScore();
    });
    opacity.addEventListener("input", () => this.mapView.setScore(scoreOn.checked, Number(opacity.value), Number(threshold.value)));
    threshold.addEventListener("input", () => {
      thrOut.textContent = fmt(Number(threshold.value), 1);
      applyScore();
    });
    this.mapView.setScore(true, 0.7, thr);

    const validOn = h("input", { type: "checkbox", "data-testid": "valid-toggle" });
    validOn.addEventListener("change", () => this.mapView.setValid(validOn.checked));
    this.mapView.setValid(false);

    const footprints = h(
      "select",
      { "data-testid": "footprints-select", "aria-label": "event footprints" },
      h("option", { value: "all" }, "all dates"),
      h("option", { value: "date" }, "this date"),
      h("option", { value: "off" }, "hidden"),
    );
    footprints.addEventListener("change", () => this.mapView.setFootprints(footprints.value as FootprintMode));
    this.mapView.setFootprints("all");

    const fit = h("button", { type: "button", class: "icon-btn", title: "show the whole AOI" }, "⤢");
    fit.addEventListener("click", () => this.mapView.fitRun());

    this.mapBar.append(
      h("div", { class: "bar-group date-group" }, h("span", { class: "bar-title" }, "Date"), stepBtn(-1, "‹"), slider, stepBtn(1, "›"), dateLabel),
      h(
        "div",
        { class: "bar-group" },
        h("label", { class: "check" }, scoreOn, "Change score"),
        h("label", { class: "mini", title: "opacity" }, "opacity", opacity),
        h("label", { class: "mini", title: "pixels scoring below are transparent; it starts at the median patch's threshold (each patch is tested against its own noise)" }, "threshold", threshold, thrOut),
      ),
      h(
        "div",
        { class: "bar-group" },
        h("label", { class: "check", title: "grey where the date is cloudy or missing" }, validOn, "Valid mask"),
        h("label", { class: "mini" }, "footprints", footprints),
        fit,
      ),
    );
  }

  private showDate(i: number | null): void {
    if (i === null) return;
    (this.mapBar as HTMLElement & { setDate?: (i: number) => void }).setDate?.(i);
  }

  // ------------------------------------------------------------------ list

  private defaultFilters(): Filters {
    return { sort: "rank", order: "", clusters: new Set(), dateFrom: "", dateTo: "", status: "all", label: "all", bbox: null };
  }

  private renderListControls(): void {
    const run = this.run;
    const f = this.filters;
    clear(this.listControls);
    const select = (testid: string, label: string, value: string, options: [string, string][], onchange: (v: string) => void): HTMLElement => {
      const el = h("select", { "data-testid": testid, "aria-label": label });
      for (const [v, text] of options) el.append(h("option", { value: v, selected: v === value }, text));
      el.addEventListener("change", () => {
        onchange(el.value);
        void this.loadList();
      });
      return h("label", { class: "field" }, h("span", {}, label), el);
    };
    const dates: [string, string][] = run.dates.map((d) => [d, d]);
    const sortOrder = h(
      "button",
      { type: "button", class: "icon-btn", "data-testid": "order-toggle", title: "reverse the order" },
      f.order === "" ? "↓" : f.order === "asc" ? "↑" : "↓",
    );
    sortOrder.addEventListener("click", () => {
      const best = f.sort === "date" ? "asc" : "desc";
      const current = f.order === "" ? best : f.order;
      f.order = current === "asc" ? "desc" : "asc";
      this.renderListControls();
      void this.loadList();
    });
    const row1 = h(
      "div",
      { class: "controls-row" },
      select(
        "sort-select",
        "Sort",
        f.sort,
        [
          ["rank", "rank (with feedback)"],
          ["rarity", "rarity"],
          ["magnitude", "magnitude"],
          ["score", "score"],
          ["date", "date"],
        ],
        (v) => {
          f.sort = v as SortKey;
          f.order = "";
          this.renderListControls();
        },
      ),
      sortOrder,
      select("status-select", "Status", f.status, [["all", "all"], ["confirmed", "confirmed"], ["pending", "pending"]], (v) => {
        f.status = v as Filters["status"];
      }),
      select(
        "label-select",
        "Label",
        f.label,
        [["all", "all"], ["relevant", "relevant"], ["irrelevant", "irrelevant"], ["unlabelled", "unlabelled"]],
        (v) => {
          f.label = v as Filters["label"];
        },
      ),
    );
    const row2 = h(
      "div",
      { class: "controls-row" },
      select("date-from", "From", f.dateFrom, [["", "first date"], ...dates], (v) => {
        f.dateFrom = v;
      }),
      select("date-to", "To", f.dateTo, [["", "last date"], ...dates], (v) => {
        f.dateTo = v;
      }),
      this.areaControl(),
    );
    const chips = h("div", { class: "type-filter", "data-testid": "type-filter" });
    for (const t of run.types) {
      const on = f.clusters.has(t.cluster);
      const chip = h(
        "button",
        {
          type: "button",
          class: `chip${on ? " on" : ""}`,
          "aria-pressed": on ? "true" : "false",
          "data-cluster": t.cluster,
          title: t.label,
        },
        h("span", { class: "swatch", style: `background:${t.color}` }),
        shortType(t.label),
        h("small", {}, String(t.size)),
      );
      chip.addEventListener("click", () => {
        if (f.clusters.has(t.cluster)) f.clusters.delete(t.cluster);
        else f.clusters.add(t.cluster);
        this.renderListControls();
        void this.loadList();
      });
      chips.append(chip);
    }
    if (f.clusters.size > 0) {
      const all = h("button", { type: "button", class: "chip link" }, "all types");
      all.addEventListener("click", () => {
        f.clusters.clear();
        this.renderListControls();
        void this.loadList();
      });
      chips.append(all);
    }
    this.listControls.append(row1, row2, chips);
  }

  private areaControl(): HTMLElement {
    const f = this.filters;
    const draw = h(
      "button",
      { type: "button", class: `button small${this.mapView.isDrawing() ? " on" : ""}`, "data-testid": "draw-area", title: "drag a box on the map (or Ctrl-drag at any time)" },
      f.bbox ? "Redraw area" : "Draw area",
    );
    draw.addEventListener("click", () => {
      const on = !this.mapView.isDrawing();
      this.mapView.setDrawing(on);
      draw.classList.toggle("on", on);
      draw.textContent = on ? "Drag on the map…" : f.bbox ? "Redraw area" : "Draw area";
    });
    const box = h("div", { class: "field area" }, h("span", {}, "Area"), draw);
    if (f.bbox) {
      const clearBtn = h("button", { type: "button", class: "icon-btn", "data-testid": "clear-area", title: "clear the area" }, "✕");
      clearBtn.addEventListener("click", () => {
        f.bbox = null;
        this.mapView.setArea(null);
        this.renderListControls();
        void this.loadList();
      });
      box.append(clearBtn);
    }
    return box;
  }

  private query(offset = 0): ChangesQuery {
    const f = this.filters;
    const q: ChangesQuery = { run: this.run.id, sort: f.sort, status: f.status, label: f.label, limit: PAGE_SIZE, offset };
    if (f.order) q.order = f.order;
    if (f.clusters.size > 0) q.cluster = [...f.clusters];
    if (f.dateFrom) q.date_from = f.dateFrom;
    if (f.dateTo) q.date_to = f.dateTo;
    if (f.bbox) q.bbox = f.bbox;
    return q;
  }

  /** (Re)load the ranked list; with `more`, append the next page. */
  private async loadList(more = false): Promise<void> {
    const token = ++this.listToken;
    const offset = more ? this.items.length : 0;
    this.listPanel.classList.add("loading");
    try {
      const page = await api.getChanges(this.query(offset));
      if (token !== this.listToken) return;
      this.items = more ? [...this.items, ...page.items] : page.items;
      this.total = page.total;
      for (const item of page.items) this.itemCache.set(key(item.run, item.event_id), item);
      this.renderList();
    } catch (e) {
      if (token === this.listToken) this.toast(`Could not load the changes: ${String(e)}`, true);
    } finally {
      if (token === this.listToken) this.listPanel.classList.remove("loading");
    }
  }

  private renderList(): void {
    clear(this.list);
    const f = this.filters;
    const filtered = f.clusters.size > 0 || f.dateFrom || f.dateTo || f.status !== "all" || f.label !== "all" || f.bbox;
    this.listSummary.textContent =
      `${this.total} change${this.total === 1 ? "" : "s"}${filtered ? " match the filters" : ""}` +
      (this.items.length < this.total ? ` · showing ${this.items.length}` : "");
    if (this.items.length === 0) {
      this.list.append(h("li", { class: "empty" }, "No change matches these filters."));
    }
    for (const item of this.items) this.list.append(this.listItem(item));
    this.more.hidden = this.items.length >= this.total;
  }

  private listItem(item: ChangeItem): HTMLElement {
    const selected = this.detail?.item.event_id === item.event_id;
    const rank = item.feedback_rank ?? item.rank;
    const moved = rank !== item.rank;
    const li = h(
      "li",
      {
        class: `change-item${selected ? " selected" : ""}${item.label ? ` labelled-${item.label}` : ""}`,
        "data-testid": "change-item",
        "data-event-id": item.event_id,
        "data-cluster": item.cluster,
        "data-label": item.label ?? "",
        "data-feedback-rank": rank,
        tabindex: 0,
      },
      h(
        "div",
        { class: "rank", title: `rank after feedback${moved ? ` (run rank ${item.rank})` : ""}` },
        h("span", { class: "rank-num", "data-testid": "item-rank" }, `#${rank}`),
        moved ? h("small", { class: rank < item.rank ? "up" : "down" }, `${rank < item.rank ? "▲" : "▼"} ${item.rank}`) : null,
      ),
      beforeAfter(item, this.run.dates),
      h(
        "div",
        { class: "item-info" },
        h("div", { class: "item-head" }, typeChip(item.type_label, item.color, item.cluster)),
        h("div", { class: "item-date" }, interval(item)),
        metricsLine(item),
        h("div", { class: "badges" }, statusBadge(item.status), labelBadge(item)),
      ),
      labelButtons(item, this, true),
    );
    li.addEventListener("click", () => this.navigate({ change: item.event_id }));
    li.addEventListener("keydown", (e) => {
      if (e.key === "Enter") this.navigate({ change: item.event_id });
    });
    li.addEventListener("mouseenter", () => {
      if (!this.detail) this.mapView.setSelected(item.event_id);
    });
    li.addEventListener("mouseleave", () => {
      if (!this.detail) this.mapView.setSelected(null);
    });
    return li;
  }

  // ------------------------------------------------------------------ labels

  private labelOf(eventId: string): api.Label | null {
    const own = this.eventLabels.get(eventId);
    if (own) return own;
    const cluster = this.itemCache.get(key(this.run.id, eventId))?.cluster;
    return cluster === undefined ? null : (this.typeLabels.get(cluster) ?? null);
  }

  private async loadLabels(): Promise<void> {
    try {
      const { labels } = await api.getFeedback(this.run.id);
      this.eventLabels.clear();
      this.typeLabels.clear();
      for (const l of labels) {
        if (l.label === null) continue;
        if (l.event_id) this.eventLabels.set(l.event_id, l.label);
        else if (l.cluster !== null) this.typeLabels.set(l.cluster, l.label);
      }
      this.renderCounts();
      this.mapView.redraw();
    } catch (e) {
      this.toast(`Could not load the labels: ${String(e)}`, true);
    }
  }

  async label(item: ChangeItem, label: LabelOrNone): Promise<void> {
    try {
      await api.setEventLabel(item.run, item.event_id, label);
      this.toast(label === "none" ? "Label removed" : `Marked ${label}`);
    } catch (e) {
      this.toast(`Could not save the label: ${String(e)}`, true);
      return;
    }
    await this.afterFeedback();
  }

  async labelType(run: string, cluster: number, label: LabelOrNone): Promise<void> {
    try {
      await api.setTypeLabel(run, cluster, label);
      this.toast(label === "none" ? "Type label removed" : `Type marked ${label}`);
    } catch (e) {
      this.toast(`Could not save the label: ${String(e)}`, true);
      return;
    }
    this.trees.delete(run);
    await this.afterFeedback();
  }

  /** Labels changed: the ranking, the similar results and the drawer follow. */
  private async afterFeedback(): Promise<void> {
    this.trees.clear();
    const tasks: Promise<void>[] = [this.loadList(), this.loadLabels()];
    if (this.detail) tasks.push(this.refreshDetail());
    if (this.page !== "map") tasks.push(this.renderPage());
    await Promise.all(tasks);
  }

  // ------------------------------------------------------------------ the change drawer

  private async tree(run: string): Promise<TypeNode | null> {
    const cached = this.trees.get(run);
    if (cached) return cached;
    try {
      const { runs } = await api.getTypes(run);
      const tree = runs.find((r) => r.run === run)?.tree ?? null;
      if (tree) this.trees.set(run, tree);
      return tree;
    } catch {
      return null;
    }
  }

  private async openChange(eventId: string): Promise<void> {
    let detail: ChangeDetail;
    try {
      detail = await api.getChange(this.run.id, eventId);
    } catch (e) {
      this.toast(`Could not open ${eventId}: ${String(e)}`, true);
      return;
    }
    const sameQuery = this.similar !== null && this.detail?.item.event_id === eventId;
    this.detail = detail;
    if (!sameQuery) this.similar = null;
    this.itemCache.set(key(detail.item.run, eventId), detail.item);
    this.mapView.setSelected(eventId);
    this.mapView.setSimilar([]);
    this.openDrawer();
    this.mapView.fitTo(detail.item.bbox);
    this.showDate(detail.item.after ?? this.run.dates.indexOf(detail.item.date));
    await this.renderDetail();
    for (const li of this.list.querySelectorAll<HTMLElement>(".change-item")) {
      li.classList.toggle("selected", li.dataset.eventId === eventId);
    }
  }

  /** The drawer takes the list's place beside the map (the list comes back when it closes). */
  private openDrawer(): void {
    this.drawer.hidden = false;
    if (!this.workspace.classList.contains("with-drawer")) {
      this.workspace.classList.add("with-drawer");
      this.mapView.map.updateSize();
    }
  }

  private closeChange(): void {
    this.detail = null;
    this.similar = null;
    this.drawer.hidden = true;
    this.workspace.classList.remove("with-drawer");
    this.mapView.map.updateSize();
    this.mapView.setSelected(null);
    this.mapView.setSimilar([]);
    for (const li of this.list.querySelectorAll(".change-item.selected")) li.classList.remove("selected");
  }

  private async refreshDetail(): Promise<void> {
    if (!this.detail) return;
    const id = this.detail.item.event_id;
    try {
      const detail = await api.getChange(this.detail.item.run, id);
      if (this.detail?.item.event_id !== id) return;
      this.detail = detail;
      if (this.similar) await this.runSimilar(false);
      await this.renderDetail();
    } catch (e) {
      this.toast(`Could not refresh ${id}: ${String(e)}`, true);
    }
  }

  private async renderDetail(): Promise<void> {
    const d = this.detail;
    if (!d) return;
    const item = d.item;
    const run = this.runs.find((r) => r.id === item.run) ?? this.run;
    const tree = await this.tree(item.run);
    if (this.detail !== d) return;
    const scrollTop = this.drawer.scrollTop;
    clear(this.drawer);
    this.openDrawer();
    this.drawer.dataset.eventId = item.event_id;

    const close = h("button", { type: "button", class: "icon-btn close", "data-testid": "detail-close", title: "close (Esc)" }, "✕");
    close.addEventListener("click", () => this.navigate({ change: null }));
    const zoom = h("button", { type: "button", class: "button small ghost", title: "zoom the map to this change" }, "Zoom to");
    zoom.addEventListener("click", () => this.mapView.fitTo(item.bbox));

    const fact = (k: string, v: string | HTMLElement): HTMLElement[] => [h("dt", {}, k), h("dd", {}, v)];
    const facts = h(
      "dl",
      { class: "facts" },
      fact("event date", item.date),
      fact("dating interval", interval(item)),
      fact("AOI", `${item.aoi}${run.crs ? ` (${run.crs})` : ""}`),
      fact("patch", `row ${item.row}, col ${item.col}`),
      fact("score", `${fmt(item.score, 2)}  (p ${fmt(item.p_value, 3)}, NFA ${fmt(item.nfa, 3)})`),
      fact("needed", item.score_threshold === null ? "–" : `${fmt(item.score_threshold, 2)} (this patch's threshold)`),
      fact("magnitude", fmt(item.magnitude, 2)),
      fact("rarity", fmt(item.rarity, 2)),
      fact("rank", `#${item.feedback_rank ?? item.rank} with your labels, #${item.rank} in the run`),
    );

    const clearSet = new Set(d.clear);
    const strip = h("div", { class: "strip", "data-testid": "clear-strip" });
    for (const i of d.clear) {
      const when = run.dates[i] ?? `#${i}`;
      const side = i === item.before ? "before" : i === item.after ? "after" : run.dates[i]! < item.date ? "pre" : "post";
      const fig = thumb(api.urls.thumb(item.run, item.event_id, i), when, "clear-thumb");
      fig.classList.add(`side-${side}`);
      fig.title = `${when}${side === "before" ? " · before" : side === "after" ? " · after" : ""} — click to show this date on the map`;
      fig.addEventListener("click", () => this.showDate(i));
      strip.append(fig);
    }
    if (d.clear.length === 0) strip.append(h("p", { class: "muted" }, "The patch is never clear."));

    this.drawer.append(
      h(
        "div",
        { class: "drawer-head" },
        h(
          "div",
          {},
          h("div", { class: "eyebrow" }, typeChip(item.type_label, item.color, item.cluster), statusBadge(item.status), labelBadge(item)),
          h("h2", {}, `Change #${item.feedback_rank ?? item.rank}`, h("small", { class: "mono", "data-testid": "detail-id" }, item.event_id)),
        ),
        h("div", { class: "head-actions" }, zoom, close),
      ),
      h("div", { class: "drawer-labels" }, h("span", { class: "muted" }, "This change is"), labelButtons(item, this)),
      h("div", { class: "drawer-top" }, beforeAfter(item, run.dates), facts),
      h(
        "section",
        { class: "card" },
        h("h3", {}, "Score over time"),
        scoreChart({
          dates: d.series.dates,
          scores: d.series.scores,
          valid: d.series.valid,
          event: item.date,
          earliest: item.date_earliest,
          latest: item.date_latest,
          threshold: item.score_threshold ?? run.threshold,
          color: item.color,
        }),
        h(
          "div",
          { class: "chart-legend" },
          h("span", {}, h("i", { class: "lg lg-line", style: `background:${item.color}` }), "patch score"),
          h("span", {}, h("i", { class: "lg lg-event" }), "event date"),
          h("span", {}, h("i", { class: "lg lg-interval" }), "dating interval"),
          h("span", {}, h("i", { class: "lg lg-valid" }), "valid fraction"),
          (item.score_threshold ?? run.threshold) !== null
            ? h("span", {}, h("i", { class: "lg lg-threshold" }), item.score_threshold !== null ? "this patch's threshold" : "threshold")
            : null,
        ),
      ),
      h(
        "section",
        { class: "card" },
        h("h3", {}, `At every clear date `, h("small", { class: "muted" }, `${clearSet.size} of ${run.dates.length} dates`)),
        strip,
      ),
      this.typeSection(d, tree),
      this.similarSection(d),
    );
    this.drawer.scrollTop = scrollTop;
  }

  private typeSection(d: ChangeDetail, tree: TypeNode | null): HTMLElement {
    const item = d.item;
    const c = d.cluster;
    const nodes = new Map<string, TypeNode>();
    const walk = (n: TypeNode): void => {
      nodes.set(n.id, n);
      n.children.forEach(walk);
    };
    if (tree) walk(tree);
    const crumbs = h("ol", { class: "crumbs", "data-testid": "type-path" });
    c.path.forEach((id, k) => {
      const n = nodes.get(id);
      crumbs.append(
        h(
          "li",
          { class: k === c.path.length - 1 ? "leaf" : "" },
          n?.color ? h("span", { class: "swatch", style: `background:${n.color}` }) : null,
          n ? `${n.label}` : id,
          n ? h("small", {}, ` ${n.size}`) : null,
        ),
      );
    });
    const typeLabel = this.typeLabels.get(c.cluster) ?? null;
    const typeButton = (label: api.Label, text: string): HTMLButtonElement => {
      const active = typeLabel === label;
      const b = h(
        "button",
        {
          type: "button",
          class: `label-btn ${label}${active ? " active" : ""}`,
          "data-testid": `type-${label}`,
          "aria-pressed": active ? "true" : "false",
          title: active ? "click again to remove the type's label" : `mark every change of this type ${label}`,
        },
        h("span", { class: "icon", "aria-hidden": "true" }, label === "relevant" ? "✓" : "✕"),
        text,
      );
      b.addEventListener("click", () => void this.labelType(item.run, c.cluster, active ? "none" : label));
      return b;
    };
    const examples = h("div", { class: "examples" });
    for (const id of c.examples.filter((e) => e !== item.event_id).slice(0, 6)) {
      const ex = this.itemCache.get(key(item.run, id));
      const i = ex?.after ?? null;
      const fig = thumb(i === null ? null : api.urls.thumb(item.run, id, i), ex ? ex.date : "", "type-example");
      fig.addEventListener("click", () => this.navigate({ run: item.run, change: id }));
      fig.title = id;
      if (i === null) void this.cacheItem(item.run, id, fig);
      examples.append(fig);
    }
    return h(
      "section",
      { class: "card" },
      h("h3", {}, "Change type"),
      h(
        "div",
        { class: "type-row" },
        typeChip(c.label, item.color, c.cluster, true),
        h("span", { class: "muted" }, `${c.size} change${c.size === 1 ? "" : "s"}${c.cluster < 0 ? " left unclustered" : ""}`),
        h("div", { class: "spacer" }),
        c.cluster >= 0
          ? h("div", { class: "label-buttons" }, typeButton("relevant", "Type relevant"), typeButton("irrelevant", "Type irrelevant"))
          : null,
      ),
      c.path.length ? h("div", { class: "hier" }, h("span", { class: "muted" }, "In the type hierarchy: "), crumbs) : null,
      examples.childElementCount ? h("div", {}, h("div", { class: "muted small" }, "Other changes of this type"), examples) : null,
    );
  }

  /** Fetch an item not yet seen (for its thumbnail) and fill `fig` in. */
  private async cacheItem(run: string, id: string, fig: HTMLElement): Promise<void> {
    try {
      const d = await api.getChange(run, id);
      this.itemCache.set(key(run, id), d.item);
      const i = d.item.after ?? d.item.before;
      if (i === null) return;
      fig.firstElementChild?.replaceWith(h("img", { src: api.urls.thumb(run, id, i), alt: d.item.date, loading: "lazy", width: 96, height: 96 }));
      const cap = fig.querySelector("figcaption");
      if (cap) cap.textContent = d.item.date;
    } catch {
      // the placeholder stays
    }
  }

  private similarSection(d: ChangeDetail): HTMLElement {
    const o = this.similarOptions;
    const find = h("button", { type: "button", class: "button primary", "data-testid": "find-similar" }, this.similar ? "Search again" : "Find similar changes");
    find.addEventListener("click", () => {
      find.disabled = true;
      void this.runSimilar(true).finally(() => (find.disabled = false));
    });
    const k = h("select", { "aria-label": "results", "data-testid": "similar-k" });
    for (const n of [10, 20, 50, 100]) k.append(h("option", { value: n, selected: n === o.k }, `${n} results`));
    k.addEventListener("change", () => (o.k = Number(k.value)));
    const fb = h("input", { type: "checkbox", checked: o.useFeedback, "data-testid": "similar-feedback" });
    fb.addEventListener("change", () => (o.useFeedback = fb.checked));
    const here = h("input", { type: "checkbox", checked: o.thisRun });
    here.addEventListener("change", () => (o.thisRun = here.checked));
    const section = h(
      "section",
      { class: "card similar" },
      h("h3", {}, "Similar changes ", h("small", { class: "muted" }, this.runs.length > 1 ? "across every date and AOI" : "across every date")),
      h(
        "div",
        { class: "similar-controls" },
        find,
        k,
        h("label", { class: "check", title: "query = q + 0.75·mean(relevant) − 0.75·mean(irrelevant) (Rocchio); labelled-irrelevant changes are dropped" }, fb, "use my labels"),
        this.runs.length > 1 ? h("label", { class: "check" }, here, "this AOI only") : null,
      ),
    );
    const s = this.similar;
    if (s) {
      const here = s.items.filter((i) => i.run === this.run.id).length;
      section.append(
        h(
          "p",
          { class: "muted small", "data-testid": "similar-summary" },
          `${s.items.length} result${s.items.length === 1 ? "" : "s"}` +
            (s.items.length - here > 0 ? ` (${s.items.length - here} in other AOIs)` : "") +
            ` · query moved by ${s.used.relevant} relevant and ${s.used.irrelevant} irrelevant label${s.used.relevant + s.used.irrelevant === 1 ? "" : "s"}` +
            " · highlighted in yellow on the map",
        ),
      );
      const gallery = h("div", { class: "gallery", "data-testid": "similar-gallery" });
      for (const r of s.items) gallery.append(this.similarCard(r));
      if (s.items.length === 0) gallery.append(h("p", { class: "muted" }, "Nothing similar was found."));
      section.append(gallery);
    }
    void d;
    return section;
  }

  private similarCard(r: ChangeItem): HTMLElement {
    const run = this.runs.find((x) => x.id === r.run);
    const card = h(
      "div",
      {
        class: `sim-card${r.label ? ` labelled-${r.label}` : ""}`,
        "data-testid": "similar-item",
        "data-event-id": r.event_id,
        "data-label": r.label ?? "",
        "data-cluster": r.cluster,
        title: `${r.event_id} — click to open`,
      },
      beforeAfter(r, run?.dates),
      h(
        "div",
        { class: "sim-info" },
        h("div", { class: "sim-top" }, typeChip(r.type_label, r.color, r.cluster), h("span", { class: "sim-score", title: "cosine similarity to the query" }, fmt(r.similarity ?? null, 2))),
        h(
          "div",
          { class: "sim-meta" },
          h("span", { class: "item-date" }, r.date),
          r.run !== this.run.id ? h("span", { class: "badge aoi", title: `in run ${r.run}, AOI ${r.aoi}` }, this.runLabel(r.run)) : null,
          labelBadge(r),
        ),
      ),
      labelButtons(r, this, true),
    );
    card.addEventListener("click", () => this.navigate({ run: r.run, change: r.event_id }));
    card.addEventListener("mouseenter", () => this.mapView.setSelected(r.event_id));
    card.addEventListener("mouseleave", () => this.mapView.setSelected(this.detail?.item.event_id ?? null));
    return card;
  }

  /** A short name of a run: its AOI, or its id when several runs share the AOI. */
  private runLabel(id: string): string {
    const run = this.runs.find((r) => r.id === id);
    if (!run) return id;
    return this.runs.filter((r) => r.aoi === run.aoi).length > 1 ? run.id : run.aoi;
  }

  private async runSimilar(render: boolean): Promise<void> {
    const d = this.detail;
    if (!d) return;
    const o = this.similarOptions;
    try {
      const result = await api.findSimilar({
        run: d.item.run,
        event_id: d.item.event_id,
        k: o.k,
        use_feedback: o.useFeedback,
        runs: o.thisRun ? [d.item.run] : null,
        exclude_same_patch: true,
      });
      if (this.detail?.item.event_id !== d.item.event_id) return;
      this.similar = result;
      for (const item of result.items) this.itemCache.set(key(item.run, item.event_id), item);
      this.mapView.setSimilar(result.items.filter((i) => i.run === this.run.id).map((i) => i.event_id));
      if (render) await this.renderDetail();
    } catch (e) {
      this.toast(`The search failed: ${String(e)}`, true);
    }
  }

  // ------------------------------------------------------------------ other pages

  private async renderPage(): Promise<void> {
    const host = this.pageHost;
    const page = this.page;
    if (page === "types") {
      const tree = await this.tree(this.run.id);
      if (this.page !== page) return;
      await this.fillCache();
      clear(host);
      host.append(
        typesPage(this.run, tree, {
          thumbOf: (id) => this.itemCache.get(key(this.run.id, id)) ?? null,
          open: (id) => this.navigate({ page: "map", change: id }),
          filter: (cluster) => {
            this.filters = this.defaultFilters();
            this.filters.clusters.add(cluster);
            this.navigate({ page: "map", change: null });
            this.renderListControls();
            void this.loadList();
          },
          labelType: (cluster, label) => this.labelType(this.run.id, cluster, label),
        }),
      );
    } else if (page === "evaluation") {
      clear(host);
      host.append(evaluationPage(this.runs, this.run));
    } else if (page === "explore") {
      clear(host);
      host.append(explorePage(this.run));
    }
  }

  /** Every change of the run in the item cache (for example thumbnails on the types page). */
  private async fillCache(): Promise<void> {
    const run = this.run.id;
    if ([...this.itemCache.values()].filter((i) => i.run === run).length >= this.run.n_events) return;
    try {
      for (let offset = 0; offset < this.run.n_events && offset < 5000; offset += 500) {
        const page = await api.getChanges({ run, limit: 500, offset });
        for (const item of page.items) this.itemCache.set(key(item.run, item.event_id), item);
        if (page.items.length < 500) break;
      }
    } catch (e) {
      this.toast(`Could not load the changes: ${String(e)}`, true);
    }
  }
}
