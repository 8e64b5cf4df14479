// The map: the run's own imagery per date, the change-score overlay, the valid mask and the event footprints, all
// in the run's pixel space (x = column, y = -row; extent [0, -height, width, 0]; docs/webapp.md).

import Feature from "ol/Feature";
import Map from "ol/Map";
import View from "ol/View";
import Zoom from "ol/control/Zoom";
import MousePosition from "ol/control/MousePosition";
import type { Coordinate } from "ol/coordinate";
import { platformModifierKeyOnly } from "ol/events/condition";
import type { MapBrowserEvent } from "ol/index";
import { getCenter, type Extent } from "ol/extent";
import GeoJSON from "ol/format/GeoJSON";
import type { FeatureLike } from "ol/Feature";
import { fromExtent } from "ol/geom/Polygon";
import DragBox from "ol/interaction/DragBox";
import ImageLayer from "ol/layer/Image";
import VectorLayer from "ol/layer/Vector";
import Projection from "ol/proj/Projection";
import ImageStatic from "ol/source/ImageStatic";
import VectorSource from "ol/source/Vector";
import Fill from "ol/style/Fill";
import Stroke from "ol/style/Stroke";
import Style from "ol/style/Style";

import { type Label, type RunInfo, urls } from "./api";

export type FootprintMode = "all" | "date" | "off";

export interface MapCallbacks {
  /** A footprint was clicked. */
  select(eventId: string): void;
  /** An area was drawn (map units), or cleared (null). */
  area(bbox: [number, number, number, number] | null): void;
  /** The label of an event as the app knows it (for styling). */
  labelOf(eventId: string): Label | null;
}

function hexToRgba(hex: string, alpha: number): string {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})/i.exec(hex);
  if (!m) return `rgba(128,128,128,${alpha})`;
  return `rgba(${parseInt(m[1] ?? "80", 16)},${parseInt(m[2] ?? "80", 16)},${parseInt(m[3] ?? "80", 16)},${alpha})`;
}

export class MapView {
  readonly map: Map;
  private run: RunInfo | null = null;
  private projection: Projection | null = null;
  private date = 0;
  private threshold = 0;
  private showScore = true;
  private showValid = false;
  private footprints: FootprintMode = "all";
  private selected: string | null = null;
  private similar = new Set<string>();
  private drawing = false;
  private imageSources: (ImageStatic | undefined)[] = [];
  private readonly imagery = new ImageLayer<ImageStatic>({ className: "ol-layer imagery" });
  private readonly score = new ImageLayer<ImageStatic>({ opacity: 0.7, className: "ol-layer score" });
  private readonly valid = new ImageLayer<ImageStatic>({ visible: false, className: "ol-layer valid" });
  private readonly events = new VectorSource();
  private readonly eventLayer: VectorLayer<VectorSource>;
  private readonly areaSource = new VectorSource();
  private readonly dragBox: DragBox;

  constructor(
    private readonly target: HTMLElement,
    private readonly callbacks: MapCallbacks,
  ) {
    this.eventLayer = new VectorLayer({ source: this.events, style: (f) => this.style(f) });
    const areaLayer = new VectorLayer({
      source: this.areaSource,
      style: new Style({
        stroke: new Stroke({ color: "#0b62d6", width: 2, lineDash: [6, 4] }),
        fill: new Fill({ color: "rgba(11,98,214,0.08)" }),
      }),
    });
    const position = new MousePosition({
      className: "ol-mouse-position mouse-position",
      coordinateFormat: (c?: Coordinate) =>
        c ? `row ${Math.floor(-(c[1] ?? 0))}, col ${Math.floor(c[0] ?? 0)}` : "",
      placeholder: "",
    });
    this.map = new Map({
      target,
      layers: [this.imagery, this.valid, this.score, areaLayer, this.eventLayer],
      controls: [new Zoom(), position],
    });
    this.dragBox = new DragBox({
      condition: (e) => this.drawing || platformModifierKeyOnly(e),
      className: "ol-dragbox area-box",
    });
    this.dragBox.on("boxend", () => {
      const extent = this.dragBox.getGeometry().getExtent();
      this.setDrawing(false);
      if (extent[2]! - extent[0]! < 1 || extent[3]! - extent[1]! < 1) return;
      this.setArea(extent as [number, number, number, number]);
      this.callbacks.area(extent as [number, number, number, number]);
    });
    this.map.addInteraction(this.dragBox);
    this.map.on("singleclick", (e) => this.click(e));
    this.map.on("pointermove", (e) => {
      if (e.dragging) return;
      const hit = this.map.hasFeatureAtPixel(e.pixel, { layerFilter: (l) => l === this.eventLayer });
      this.target.style.cursor = this.drawing ? "crosshair" : hit ? "pointer" : "";
    });
  }

  setRun(run: RunInfo): void {
    this.run = run;
    const extent = run.extent as Extent;
    this.projection = new Projection({ code: `changescope:${run.id}`, units: "pixels", extent });
    this.imageSources = [];
    const view = new View({
      projection: this.projection,
      center: getCenter(extent),
      extent,
      showFullExtent: true,
      zoom: 1,
      maxZoom: 12,
    });
    this.map.setView(view);
    view.fit(extent, { padding: [16, 16, 16, 16] });
    this.threshold = run.threshold ?? run.score_range[0];
    this.date = Math.max(0, run.dates.length - 1);
    this.selected = null;
    this.similar.clear();
    this.areaSource.clear();
    this.events.clear();
    this.refreshImages();
    void this.loadEvents(run);
  }

  private async loadEvents(run: RunInfo): Promise<void> {
    const response = await fetch(urls.events(run.id));
    if (!response.ok || this.run !== run || this.projection === null) return;
    const features = new GeoJSON().readFeatures(await response.json(), {
      dataProjection: this.projection,
      featureProjection: this.projection,
    });
    for (const f of features) f.setId(String(f.get("event_id")));
    this.events.clear();
    this.events.addFeatures(features);
  }

  private imageSource(i: number): ImageStatic {
    const run = this.run!;
    let source = this.imageSources[i];
    if (source === undefined) {
      source = new ImageStatic({
        url: urls.image(run.id, i),
        imageExtent: run.extent as Extent,
        projection: this.projection!,
        interpolate: false,
      });
      this.imageSources[i] = source;
    }
    return source;
  }

  private refreshImages(): void {
    const run = this.run;
    if (run === null || this.projection === null || run.dates.length === 0) return;
    const i = this.date;
    this.imagery.setSource(this.imageSource(i));
    // warm the neighbours so that the slider feels immediate
    for (const j of [i - 1, i + 1]) if (j >= 0 && j < run.dates.length) new Image().src = urls.image(run.id, j);
    this.refreshScore();
    if (this.showValid) this.refreshValid();
    this.eventLayer.changed();
  }

  private refreshScore(): void {
    const run = this.run;
    if (run === null || this.projection === null || !this.showScore) return;
    this.score.setSource(
      new ImageStatic({
        url: urls.score(run.id, this.date, this.threshold),
        imageExtent: run.extent as Extent,
        projection: this.projection,
        interpolate: false,
      }),
    );
  }

  private refreshValid(): void {
    const run = this.run;
    if (run === null || this.projection === null) return;
    this.valid.setSource(
      new ImageStatic({
        url: urls.valid(run.id, this.date),
        imageExtent: run.extent as Extent,
        projection: this.projection,
        interpolate: false,
      }),
    );
  }

  setDate(i: number): void {
    if (i === this.date) return;
    this.date = i;
    this.refreshImages();
  }

  getDate(): number {
    return this.date;
  }

  setScore(visible: boolean, opacity: number, threshold: number): void {
    const changed = visible !== this.showScore || threshold !== this.threshold;
    this.showScore = visible;
    this.threshold = threshold;
    this.score.setVisible(visible);
    this.score.setOpacity(opacity);
    if (changed) this.refreshScore();
  }

  setValid(visible: boolean): void {
    this.showValid = visible;
    this.valid.setVisible(visible);
    if (visible) this.refreshValid();
  }

  setFootprints(mode: FootprintMode): void {
    this.footprints = mode;
    this.eventLayer.setVisible(mode !== "off");
    this.eventLayer.changed();
  }

  setSelected(eventId: string | null): void {
    this.selected = eventId;
    this.eventLayer.changed();
  }

  setSimilar(eventIds: string[]): void {
    this.similar = new Set(eventIds);
    this.eventLayer.changed();
  }

  /** Repaint the footprints (labels changed). */
  redraw(): void {
    this.eventLayer.changed();
  }

  /** Zoom to a change and its surroundings (`context` patches on each side). */
  fitTo(bbox: [number, number, number, number], context = 5): void {
    const run = this.run;
    if (run === null) return;
    const pad = run.patch_size * context;
    const extent: Extent = [bbox[0] - pad, bbox[1] - pad, bbox[2] + pad, bbox[3] + pad];
    this.map.getView().fit(extent, { duration: 250, maxZoom: 8, padding: [24, 24, 24, 24] });
  }

  fitRun(): void {
    if (this.run) this.map.getView().fit(this.run.extent as Extent, { padding: [16, 16, 16, 16], duration: 250 });
  }

  setDrawing(on: boolean): void {
    this.drawing = on;
    this.target.classList.toggle("drawing", on);
  }

  isDrawing(): boolean {
    return this.drawing;
  }

  setArea(bbox: [number, number, number, number] | null): void {
    this.areaSource.clear();
    if (bbox) this.areaSource.addFeature(new Feature(fromExtent(bbox)));
  }

  private click(e: MapBrowserEvent<PointerEvent | KeyboardEvent | WheelEvent>): void {
    if (this.drawing) return;
    let hit: string | null = null;
    let best = Infinity;
    // the smallest footprint under the pointer wins (nested footprints of subdivided patches)
    this.map.forEachFeatureAtPixel(
      e.pixel,
      (f) => {
        const ext = f.getGeometry()?.getExtent();
        const area = ext ? (ext[2]! - ext[0]!) * (ext[3]! - ext[1]!) : Infinity;
        if (area < best) {
          best = area;
          hit = String(f.get("event_id"));
        }
      },
      { layerFilter: (l) => l === this.eventLayer, hitTolerance: 2 },
    );
    if (hit !== null) this.callbacks.select(hit);
  }

  private style(f: FeatureLike): Style | Style[] | undefined {
    const run = this.run;
    const id = String(f.get("event_id"));
    const selected = id === this.selected;
    const similar = this.similar.has(id);
    if (this.footprints === "date" && run && !selected && !similar && f.get("date") !== run.dates[this.date]) {
      return undefined;
    }
    const color = String(f.get("color") ?? "#888888");
    const label = this.callbacks.labelOf(id);
    const pending = f.get("status") === "pending";
    const styles: Style[] = [];
    if (selected || similar) {
      styles.push(
        new Style({ stroke: new Stroke({ color: selected ? "#ffffff" : "#ffd60a", width: selected ? 7 : 6 }) }),
      );
    }
    if (label === "irrelevant") {
      styles.push(
        new Style({
          stroke: new Stroke({ color: "rgba(60,60,60,0.9)", width: 1.5, lineDash: [3, 3] }),
          fill: new Fill({ color: "rgba(60,60,60,0.15)" }),
        }),
      );
      return styles;
    }
    styles.push(
      new Style({
        stroke: new Stroke({
          color,
          width: selected ? 3 : label === "relevant" ? 3 : 2,
          lineDash: pending ? [5, 4] : undefined,
        }),
        fill: new Fill({ color: hexToRgba(color, label === "relevant" ? 0.35 : selected ? 0.25 : 0.12) }),
      }),
    );
    return styles;
  }
}
