// The other pages: the change-type browser, the evaluation and the explore figures.

import { type ChangeItem, type Label, type LabelOrNone, type RunInfo, type TypeNode, urls } from "./api";
import { fmt, h, thumb } from "./dom";

export interface TypesPageHooks {
  thumbOf(eventId: string): ChangeItem | null;
  open(eventId: string): void;
  filter(cluster: number): void;
  labelType(cluster: number, label: LabelOrNone): Promise<void>;
}

function pageHeader(title: string, run: RunInfo, note: string): HTMLElement {
  return h("div", { class: "page-head" }, h("h1", {}, title), h("p", { class: "muted" }, `${run.id} · AOI ${run.aoi} — ${note}`));
}

export function typesPage(run: RunInfo, tree: TypeNode | null, hooks: TypesPageHooks): HTMLElement {
  const page = h("div", { class: "types-page", "data-testid": "types-page" });
  page.append(
    pageHeader(
      "Change types",
      run,
      "the change types the run discovered, as a hierarchy (closest types join first). Mark a whole type relevant or irrelevant: the ranking and the search follow.",
    ),
  );
  if (tree === null) {
    page.append(h("p", { class: "muted" }, "This run has no change types."));
    return page;
  }
  const node = (n: TypeNode, depth: number): HTMLElement => {
    const leaf = n.children.length === 0;
    const row = h(
      "div",
      { class: `tree-row${leaf ? " leaf" : ""}`, "data-testid": "type-node", "data-node": n.id, "data-cluster": n.cluster ?? "" },
      h("span", { class: "swatch big", style: `background:${n.color ?? "#bbb"}` }),
      h(
        "div",
        { class: "tree-title" },
        h("b", {}, n.label),
        h(
          "span",
          { class: "muted small" },
          `${n.size} change${n.size === 1 ? "" : "s"}` + (!leaf && n.distance !== null ? ` · joined at distance ${fmt(n.distance, 2)}` : ""),
        ),
      ),
    );
    if (leaf && n.cluster !== null) {
      const cluster = n.cluster;
      const btn = (label: Label, text: string): HTMLButtonElement => {
        const active = n.feedback === label;
        const b = h(
          "button",
          {
            type: "button",
            class: `label-btn ${label}${active ? " active" : ""}`,
            "data-testid": `type-${label}`,
            "aria-pressed": active ? "true" : "false",
          },
          h("span", { class: "icon", "aria-hidden": "true" }, label === "relevant" ? "✓" : "✕"),
          text,
        );
        b.addEventListener("click", () => void hooks.labelType(cluster, active ? "none" : label));
        return b;
      };
      const show = h("button", { type: "button", class: "button small ghost" }, "List them");
      show.addEventListener("click", () => hooks.filter(cluster));
      // the unclustered changes (-1) are no type: they can be listed but not labelled as one
      row.append(
        h("div", { class: "label-buttons" }, show, cluster >= 0 ? [btn("relevant", "Relevant"), btn("irrelevant", "Irrelevant")] : null),
      );
    }
    const examples = h("div", { class: "examples" });
    for (const id of n.examples.slice(0, leaf ? 8 : 5)) {
      const item = hooks.thumbOf(id);
      const i = item?.after ?? item?.before ?? null;
      const fig = thumb(i === null ? null : urls.thumb(run.id, id, i), item?.date ?? id, "type-example");
      fig.title = `${id} — open`;
      fig.addEventListener("click", () => hooks.open(id));
      examples.append(fig);
    }
    const body = h("div", { class: "tree-body" }, row, examples.childElementCount ? examples : null);
    if (leaf) return h("li", { class: "tree-leaf" }, body);
    const details = h("details", { open: depth < 3 }, h("summary", {}, body));
    const ul = h("ul", { class: "tree" });
    for (const c of n.children) ul.append(node(c, depth + 1));
    details.append(ul);
    return h("li", {}, details);
  };
  page.append(h("ul", { class: "tree root" }, node(tree, 0)));
  return page;
}

export function evaluationPage(runs: RunInfo[], current: RunInfo): HTMLElement {
  const page = h("div", { class: "eval-page", "data-testid": "evaluation-page" });
  page.append(pageHeader("Evaluation", current, "detection against the run's truth (patch level): ROC and precision-recall."));
  const ordered = [current, ...runs.filter((r) => r !== current)];
  for (const run of ordered) {
    const card = h("section", { class: "card" }, h("h2", {}, `${run.id} `, h("small", { class: "muted" }, `AOI ${run.aoi}`)));
    if (!run.has_truth || run.metrics === null) {
      card.append(h("p", { class: "muted" }, "This run has no truth to evaluate against."));
    } else {
      const m = run.metrics;
      card.append(
        h(
          "div",
          { class: "kpis" },
          h("div", { class: "kpi" }, h("b", {}, fmt(m.auc, 3)), h("span", {}, "ROC AUC")),
          h("div", { class: "kpi" }, h("b", {}, fmt(m.ap, 3)), h("span", {}, "average precision")),
          h("div", { class: "kpi" }, h("b", {}, fmt(m.best_f1, 3)), h("span", {}, "best F1")),
        ),
      );
      const figs = h("div", { class: "figures two" });
      for (const name of ["roc.png", "pr.png"]) {
        if (!run.figures.includes(name)) continue;
        figs.append(
          h(
            "figure",
            { class: "figure" },
            h("img", { src: urls.figure(run.id, name), alt: name, loading: "lazy" }),
            h("figcaption", {}, name === "roc.png" ? "ROC curve" : "precision-recall curve"),
          ),
        );
      }
      card.append(figs);
    }
    page.append(card);
  }
  return page;
}

const EXPLORE_CAPTION: Record<string, string> = {
  embeddings: "patch embeddings",
  changes: "change vectors",
};

export function explorePage(run: RunInfo): HTMLElement {
  const page = h("div", { class: "explore-page", "data-testid": "explore-page" });
  page.append(pageHeader("Explore", run, "the embeddings and change vectors projected to 2-D (from `changescope explore`)."));
  const names = run.figures.filter((f) => f.startsWith("explore_")).sort();
  if (names.length === 0) {
    page.append(
      h("p", { class: "muted" }, "No explore figures in this run. Make them with ", h("code", {}, "changescope explore RUN_DIR"), "."),
    );
    return page;
  }
  const figs = h("div", { class: "figures" });
  for (const name of names) {
    const [, what = "", method = ""] = /^explore_([a-z]+)_?([a-z0-9]*)\.png$/i.exec(name) ?? [];
    figs.append(
      h(
        "figure",
        { class: "figure" },
        h("img", { src: urls.figure(run.id, name), alt: name, loading: "lazy" }),
        h("figcaption", {}, `${EXPLORE_CAPTION[what] ?? what}${method ? ` · ${method.toUpperCase()}` : ""}`),
      ),
    );
  }
  page.append(figs);
  return page;
}
