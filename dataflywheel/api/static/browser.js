// The sample browser: reads the JSON API with the key the user typed (kept in localStorage).
// The page state lives in the URL query (run, round, prompt, verifier, passed, min_score,
// max_score, purpose, q, compare, lineage) so a view can be linked, and a key may be passed
// in the fragment (#key=...) for scripted use; it is moved to localStorage and removed.
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = { run: "run_id", round: "round_index", prompt: "prompt_id", verifier: "verifier",
  passed: "passed", "min-score": "min_score", "max-score": "max_score", purpose: "purpose", q: "q" };
let nextAfter = null;

function key() { return localStorage.getItem("flywheel-api-key") || ""; }

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) url.searchParams.set(k, v);
  const response = await fetch(url, { headers: { Authorization: `Bearer ${key()}` } });
  const body = await response.json();
  if (!response.ok) throw new Error(`${response.status}: ${body.message || response.statusText}`);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function verdicts(scores) {
  const span = el("span");
  for (const s of scores) {
    const mark = s.passed === true ? "✓" : s.passed === false ? "✗" : "?";
    const cls = s.passed === true ? "pass" : s.passed === false ? "fail" : "muted";
    const value = s.value == null ? s.status : s.value;
    span.append(el("span", { class: cls, title: s.reason || "" }, `${mark} ${s.verifier} (${value})`),
                el("br"));
  }
  return span;
}

function filterParams() {
  const params = {};
  for (const [id, name] of Object.entries(FILTERS)) params[name] = $(id).value.trim();
  return params;
}

function saveView(extra = {}) {
  const url = new URL(location.href);
  url.search = "";
  for (const [id] of Object.entries(FILTERS)) if ($(id).value.trim()) url.searchParams.set(id, $(id).value.trim());
  for (const [k, v] of Object.entries(extra)) if (v) url.searchParams.set(k, v);
  history.replaceState(null, "", url);
}

async function loadSamples(append = false) {
  const params = { ...filterParams(), limit: 50 };
  if (append && nextAfter != null) params.after_id = nextAfter;
  const page = await api("/samples", params);
  const body = $("samples").tBodies[0];
  if (!append) body.replaceChildren();
  for (const s of page.items) {
    body.append(el("tr", { "data-sample-id": s.id, "data-passed": String(s.scores.some((x) => x.passed)) },
      el("td", {}, s.id),
      el("td", {}, `run ${s.run_id} · r${s.round_index}`),
      el("td", {}, el("a", { class: "prompt-link", onclick: () => showPrompt(s.prompt_id, s.run_id) },
                      `#${s.prompt_id}`), " ", s.prompt_text),
      el("td", { class: "text" }, s.text),
      el("td", {}, verdicts(s.scores)),
      el("td", {}, el("a", { class: "ckpt-link", onclick: () => showLineage(s.checkpoint_id) },
                      `#${s.checkpoint_id}`))));
  }
  nextAfter = page.next_after;
  $("next").hidden = nextAfter == null;
  $("count").textContent = `${body.rows.length} sample(s) shown`;
}

async function showPrompt(promptId, runId) {
  const doc = await api(`/prompts/${promptId}/samples`, { run_id: runId });
  const box = el("div", { class: "rounds", "data-prompt-id": promptId });
  for (const r of doc.rounds) {
    const card = el("div", { class: "round", "data-round": r.round_index },
                    el("h3", {}, `run ${r.run_id} · round ${r.round_index}`));
    for (const s of r.samples) {
      const ok = s.scores.some((x) => x.passed);
      card.append(el("div", { class: `completion ${ok ? "pass" : "fail"}` }, s.text || "∅"));
    }
    box.append(card);
  }
  const reference = doc.reference ? ` · reference ${JSON.stringify(doc.reference)}` : "";
  $("compare-hint").textContent = `prompt #${doc.prompt_id}: ${doc.prompt_text}${reference}`;
  $("compare-body").replaceChildren(box);
  saveView({ compare: promptId, lineage: $("checkpoint").value });
}

function lineageTree(doc) {
  const root = el("ul");
  for (const c of doc.chain) {
    const where = c.round_index == null ? "base model" : `run ${c.run_id} · round ${c.round_index}`;
    const evals = c.evaluations.map((e) => `${e.eval_set} ${e.metric} ${e.primary.toFixed(3)}`).join(", ");
    const item = el("li", { class: "ckpt-node", "data-checkpoint-id": c.id },
      el("span", { class: "ckpt" }, `${c.depth ? "↑ " : ""}checkpoint #${c.id}`),
      ` · ${where} · ${c.status}${evals ? " · " + evals : ""}`);
    const datasets = el("ul");
    for (const d of c.datasets) {
      const detail = el("ul");
      for (const s of d.sources)
        detail.append(el("li", {}, `${s.samples} sample(s) from run ${s.run_id} round ${s.round_index}, generated by #${s.generated_by}`));
      for (const v of d.verifiers)
        detail.append(el("li", {}, `${v.verifier}: ${v.passed} passed, ${v.failed} failed`));
      datasets.append(el("li", { class: "dataset-node" },
        `dataset #${d.id} ${d.name} (${d.kind}) · ${d.rows} rows`, detail));
    }
    item.append(datasets);
    root.append(item);
  }
  const totals = el("ul");
  for (const s of doc.samples_by_round)
    totals.append(el("li", { class: "origin" }, `run ${s.run_id} round ${s.round_index} by #${s.generated_by}: ${s.samples}`));
  return el("div", {}, root, el("p", { class: "muted" }, "training samples by origin"), totals);
}

async function showLineage(checkpointId) {
  $("checkpoint").value = checkpointId;
  const doc = await api(`/checkpoints/${checkpointId}/lineage`);
  $("lineage-body").replaceChildren(lineageTree(doc));
  saveView({ lineage: checkpointId });
}

async function loadRuns(selected) {
  const page = await api("/runs", { limit: 200 });
  const select = $("run");
  select.replaceChildren(el("option", { value: "" }, "all runs"));
  for (const r of page.items) select.append(el("option", { value: r.id }, `#${r.id} ${r.name} (${r.status})`));
  if (selected) select.value = selected;
}

function guard(fn) {
  return async (...args) => {
    try { await fn(...args); status(`connected · ${new Date().toLocaleTimeString()}`); }
    catch (error) { status(String(error.message || error), true); }
  };
}

const start = guard(async () => {
  const query = new URLSearchParams(location.search);
  await loadRuns(query.get("run"));
  await loadSamples();
  if (query.get("compare")) await showPrompt(query.get("compare"), query.get("run") || undefined);
  if (query.get("lineage")) await showLineage(query.get("lineage"));
  document.body.dataset.ready = "true";
});

function init() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("key")) {
    localStorage.setItem("flywheel-api-key", fragment.get("key"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const query = new URLSearchParams(location.search);
  for (const id of Object.keys(FILTERS)) if (query.get(id)) $(id).value = query.get(id);
  $("key").value = key();
  $("connect").addEventListener("click", () => {
    localStorage.setItem("flywheel-api-key", $("key").value.trim());
    start();
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    saveView();
    guard(() => loadSamples())();
  });
  $("next").addEventListener("click", guard(() => loadSamples(true)));
  $("lineage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guard(() => showLineage($("checkpoint").value))();
  });
  if (key()) start();
}

init();
