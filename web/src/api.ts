// The backend's API (docs/webapp.md): types and thin fetch wrappers. Every URL is relative to the page's origin.

export type Label = "relevant" | "irrelevant";
export type LabelOrNone = Label | "none";
export type Status = "confirmed" | "pending";
export type SortKey = "rank" | "rarity" | "magnitude" | "score" | "date";

export interface TypeInfo {
  cluster: number;
  label: string;
  color: string;
  size: number;
}

export interface Metrics {
  auc: number | null;
  ap: number | null;
  best_f1: number | null;
}

export interface RunInfo {
  id: string;
  name: string;
  aoi: string;
  crs: string | null;
  extent: [number, number, number, number];
  width: number;
  height: number;
  patch_size: number;
  dates: string[];
  n_events: number;
  n_confirmed: number;
  n_pending: number;
  has_truth: boolean;
  metrics: Metrics | null;
  figures: string[];
  score_range: [number, number];
  threshold: number | null;
  types: TypeInfo[];
}

export interface ChangeItem {
  event_id: string;
  run: string;
  aoi: string;
  date: string;
  date_earliest: string | null;
  date_latest: string | null;
  row: number;
  col: number;
  bbox: [number, number, number, number];
  score: number;
  p_value: number | null;
  nfa: number | null;
  /** The score this change's patch needed to be declared (each patch is tested against its own noise). */
  score_threshold: number | null;
  magnitude: number;
  rarity: number;
  rank: number;
  feedback_rank: number | null;
  cluster: number;
  type_label: string;
  color: string;
  status: Status;
  label: Label | null;
  label_source: "event" | "type" | null;
  before: number | null;
  after: number | null;
  similarity?: number | null;
}

export interface ChangeDetail {
  item: ChangeItem;
  series: { dates: string[]; scores: (number | null)[]; valid: (number | null)[] };
  clear: number[];
  cluster: { cluster: number; label: string; size: number; path: string[]; examples: string[] };
}

export interface ChangesQuery {
  run?: string | undefined;
  sort?: SortKey;
  order?: "asc" | "desc";
  cluster?: number[];
  date_from?: string | undefined;
  date_to?: string | undefined;
  status?: "all" | Status;
  bbox?: [number, number, number, number] | null;
  label?: "all" | Label | "unlabelled";
  limit?: number;
  offset?: number;
}

export interface ChangesPage {
  total: number;
  items: ChangeItem[];
}

export interface SimilarRequest {
  run: string;
  event_id: string;
  k?: number;
  use_feedback?: boolean;
  runs?: string[] | null;
  date_from?: string | null;
  date_to?: string | null;
  exclude_same_patch?: boolean;
}

export interface SimilarResult {
  query: unknown;
  items: ChangeItem[];
  used: { relevant: number; irrelevant: number };
}

export interface StoredLabel {
  run: string;
  event_id: string | null;
  cluster: number | null;
  label: Label | null;
  updated: string | null;
}

export interface TypeNode {
  id: string;
  size: number;
  cluster: number | null;
  label: string;
  color: string | null;
  distance: number | null;
  children: TypeNode[];
  examples: string[];
  feedback: Label | null;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function request<T>(url: string, init?: RequestInit): Promise<T> {
  const response = await fetch(url, init);
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = (await response.json()) as { detail?: unknown };
      if (typeof body.detail === "string") detail = body.detail;
      else if (body.detail !== undefined) detail = JSON.stringify(body.detail);
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, `${response.status} ${detail}`);
  }
  return (await response.json()) as T;
}

const post = <T>(url: string, body: unknown): Promise<T> =>
  request<T>(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

const enc = encodeURIComponent;

export const urls = {
  image: (run: string, i: number): string => `/api/runs/${enc(run)}/dates/${i}/image.png`,
  valid: (run: string, i: number): string => `/api/runs/${enc(run)}/dates/${i}/valid.png`,
  score: (run: string, i: number, threshold: number): string =>
    `/api/runs/${enc(run)}/dates/${i}/score.png?threshold=${threshold.toPrecision(4)}`,
  events: (run: string): string => `/api/runs/${enc(run)}/events.geojson`,
  figure: (run: string, name: string): string => `/api/runs/${enc(run)}/figures/${enc(name)}`,
  thumb: (run: string, eventId: string, i: number): string => `/api/changes/${enc(run)}/${enc(eventId)}/thumb/${i}.png`,
  export: (run: string): string => `/api/feedback/export.parquet?run=${enc(run)}`,
};

export function getRuns(): Promise<{ runs: RunInfo[] }> {
  return request("/api/runs");
}

export function getChanges(query: ChangesQuery): Promise<ChangesPage> {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "") continue;
    if (key === "cluster") for (const c of value as number[]) params.append("cluster", String(c));
    else if (key === "bbox") params.set("bbox", (value as number[]).map((v) => v.toFixed(2)).join(","));
    else params.set(key, String(value));
  }
  return request(`/api/changes?${params.toString()}`);
}

export function getChange(run: string, eventId: string): Promise<ChangeDetail> {
  return request(`/api/changes/${enc(run)}/${enc(eventId)}`);
}

export function findSimilar(body: SimilarRequest): Promise<SimilarResult> {
  return post("/api/similar", body);
}

export function getFeedback(run: string): Promise<{ labels: StoredLabel[] }> {
  return request(`/api/feedback?run=${enc(run)}`);
}

export function setEventLabel(run: string, eventId: string, label: LabelOrNone): Promise<StoredLabel> {
  return post("/api/feedback", { run, event_id: eventId, label });
}

export function setTypeLabel(run: string, cluster: number, label: LabelOrNone): Promise<StoredLabel> {
  return post("/api/feedback", { run, cluster, label });
}

export function getTypes(run?: string): Promise<{ runs: { run: string; tree: TypeNode }[] }> {
  return request(run === undefined ? "/api/types" : `/api/types?run=${enc(run)}`);
}
