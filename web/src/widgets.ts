// Small pieces shared by the list, the change drawer and the pages.

import { type ChangeItem, type Label, type LabelOrNone, urls } from "./api";
import { fmt, h, thumb } from "./dom";

export interface LabelHandler {
  label(item: ChangeItem, label: LabelOrNone): Promise<void>;
}

/** A type's label without its parenthesised summary ("type 1 (11 changes, ...)" -> "type 1"). */
export function shortType(label: string): string {
  return label.replace(/\s*\([^)]*\)\s*$/, "") || label;
}

export function typeChip(label: string, color: string, cluster: number, full = false): HTMLElement {
  return h(
    "span",
    { class: `type-chip${cluster < 0 ? " noise" : ""}`, title: label },
    h("span", { class: "swatch", style: `background:${color}` }),
    full ? label : shortType(label),
  );
}

export function statusBadge(status: string): HTMLElement {
  return h("span", { class: `badge status-${status}`, title: status === "pending" ? "not yet confirmed by a later date" : "confirmed" }, status);
}

export function labelBadge(item: ChangeItem): HTMLElement | null {
  if (item.label === null) return null;
  const via = item.label_source === "type" ? " (type)" : "";
  return h(
    "span",
    { class: `badge label-${item.label}`, "data-testid": "label-badge", "data-label": item.label, title: via ? "labelled through its change type" : "labelled" },
    item.label + via,
  );
}

/** The relevant / irrelevant pair of a change; pressing the active one removes the label. */
export function labelButtons(item: ChangeItem, handler: LabelHandler, compact = false): HTMLElement {
  const button = (label: Label, text: string, icon: string): HTMLButtonElement => {
    const active = item.label === label;
    const viaType = active && item.label_source === "type";
    const el = h(
      "button",
      {
        type: "button",
        class: `label-btn ${label}${active ? " active" : ""}${viaType ? " via-type" : ""}`,
        "data-testid": `mark-${label}`,
        "aria-pressed": active ? "true" : "false",
        title: active && !viaType ? `${text}: click again to remove the label` : viaType ? `${text} through its type; click to label this change itself` : `Mark ${text.toLowerCase()}`,
      },
      h("span", { class: "icon", "aria-hidden": "true" }, icon),
      compact ? null : h("span", {}, text),
    );
    el.addEventListener("click", (e) => {
      e.stopPropagation();
      el.disabled = true;
      const next: LabelOrNone = active && !viaType ? "none" : label;
      void handler.label(item, next).finally(() => {
        el.disabled = false;
      });
    });
    return el;
  };
  return h(
    "div",
    { class: `label-buttons${compact ? " compact" : ""}` },
    button("relevant", "Relevant", "✓"),
    button("irrelevant", "Irrelevant", "✕"),
  );
}

/** Before and after thumbnails of a change at its nearest clear dates. */
export function beforeAfter(item: ChangeItem, dates: string[] | undefined): HTMLElement {
  const caption = (word: string, i: number | null): string =>
    i === null ? word : `${word} ${dates?.[i]?.slice(0, 7) ?? `#${i}`}`;
  return h(
    "div",
    { class: "before-after" },
    thumb(item.before === null ? null : urls.thumb(item.run, item.event_id, item.before), caption("before", item.before), "thumb-before"),
    thumb(item.after === null ? null : urls.thumb(item.run, item.event_id, item.after), caption("after", item.after), "thumb-after"),
  );
}

export function interval(item: ChangeItem): string {
  if (item.date_earliest && item.date_latest && item.date_earliest !== item.date_latest) {
    return `${item.date_earliest} → ${item.date_latest}`;
  }
  return item.date;
}

export function metricsLine(item: ChangeItem): HTMLElement {
  return h(
    "div",
    { class: "metrics" },
    h("span", { title: "change score" }, h("b", {}, "score "), fmt(item.score, 1)),
    h("span", { title: "magnitude of the change vector" }, h("b", {}, "mag "), fmt(item.magnitude, 2)),
    h("span", { title: "rarity among all changes (0-1)" }, h("b", {}, "rarity "), fmt(item.rarity, 2)),
  );
}
