// tfbatch Dashboard: a small page over the v3 API of the service that serves it.
//
// Rules this file keeps:
// - every value from the service reaches the page as text (textContent, never innerHTML), so a
//   file named "<img src=x onerror=alert(1)>.json" shows as those characters;
// - the token lives in sessionStorage (gone with the tab), is refreshed a minute before it
//   expires and never goes into a URL;
// - requests go to this origin only, under the stage prefix the page was served from.
"use strict";

// The API's root: "" locally, the stage ("/api") behind API Gateway, where the page is /api/dashboard.
function apiBase(pathname) {
  return pathname.replace(/\/dashboard\/?$/, "");
}
const BASE = apiBase(location.pathname);
const TOKEN_KEY = "tfbatch.token";
const POLL_MS = 2000;
const REFRESH_BEFORE_S = 60;

// -- small helpers ---------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const $ = (selector) => document.querySelector(selector);
const number = (value) => new Intl.NumberFormat().format(value);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

function claims(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
}

// -- the session -----------------------------------------------------------------------------
const session = {
  token: sessionStorage.getItem(TOKEN_KEY),
  timer: null,
  get claims() { return this.token ? claims(this.token) : null; },
  get instance() { return this.claims.instance_id; },
  set(token) {
    this.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    this.schedule();
  },
  clear() {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(this.timer);
  },
  valid() {
    try {
      return Boolean(this.token) && this.claims.exp > Date.now() / 1000 + 5;
    } catch {
      return false;  // not a token this service gave: sign in again
    }
  },
  schedule() {
    clearTimeout(this.timer);
    const wait = Math.max(5, this.claims.exp - Date.now() / 1000 - REFRESH_BEFORE_S);
    this.timer = setTimeout(() => this.refresh(), wait * 1000);
  },
  async refresh() {
    try {
      const answer = await api("PUT", "/v3/identity/token");
      this.set(answer.token);
    } catch (error) {
      if (error.status === 401) signOut("Your session ended; sign in again.");
      else this.timer = setTimeout(() => this.refresh(), 10000);
    }
  },
};

class ApiError extends Error {
  constructor(status, body) {
    const first = (body && body.errors && body.errors[0]) || {};
    super(first.message || `The service answered ${status}.`);
    this.status = status;
    this.code = first.code || "";
    this.target = first.target || null;
  }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (session.token) init.headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(BASE + path, init);
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    if (response.ok) throw new ApiError(response.status, null);
  }
  if (!response.ok) {
    if (response.status === 401 && session.token && path !== "/v3/identity/token") {
      signOut("Your session ended; sign in again.");
    }
    throw new ApiError(response.status, parsed);
  }
  return parsed;
}

const instancePath = () => `/v3/wml_instances/${session.instance}`;

// An upload with progress (fetch reports none for request bodies).
function upload(path, file, contentType, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PUT", BASE + path);
    request.setRequestHeader("Authorization", `Bearer ${session.token}`);
    request.setRequestHeader("Content-Type", contentType);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      let parsed = null;
      try {
        parsed = request.responseText ? JSON.parse(request.responseText) : null;
      } catch {
        parsed = null;  // a gateway's own HTML error page: the status says enough
      }
      if (request.status >= 200 && request.status < 300) resolve(parsed);
      else reject(new ApiError(request.status, parsed));
    });
    request.addEventListener("error", () => reject(new ApiError(0, null)));
    request.send(file);
  });
}

// -- confirmation ----------------------------------------------------------------------------
function confirmDelete(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// -- views -----------------------------------------------------------------------------------
// Each route starts a new view generation; a refresh or a late answer of an older view finds its
// generation gone and neither renders nor schedules another refresh.
let generation = 0;
let polling = null;
const current = () => generation;
function stopPolling() {
  generation += 1;
  clearTimeout(polling);
  polling = null;
}

// Run `step` every POLL_MS while this view lasts and until the step answers false.
function poll(step) {
  const mine = current();
  clearTimeout(polling);
  const run = async () => {
    if (mine !== current()) return;
    try {
      if ((await step()) === false) {
        polling = null;
        return;
      }
    } catch (error) {
      if (error.status !== 401 && !error.stale && mine === current()) showProblem(error);
    }
    if (mine === current()) polling = setTimeout(run, POLL_MS);
  };
  polling = setTimeout(run, POLL_MS);
}

function show(...children) {
  $("#view").replaceChildren(h("div", { class: "page" }, ...children));
}

// A view's answers, dropped if the user has moved on meanwhile (the view's generation ended).
async function fetched(request) {
  const mine = current();
  const answer = await request;
  if (mine !== current()) throw new Stale();
  return answer;
}
class Stale extends Error {
  constructor() { super("stale"); this.status = 0; this.stale = true; }
}

function showProblem(error) {
  const box = $("#problem");
  if (box) box.textContent = error.message;
}

const problemBox = () => h("p", { id: "problem", class: "error", role: "alert" });

function statusBadge(status) {
  return h("span", { class: `status status-${String(status).toLowerCase().replace(/[^a-z_]/g, "")}` }, status);
}

// Overview: the instance's usage counters.
async function overview() {
  const instance = await fetched(api("GET", instancePath()));
  const usage = instance.entity.usage;
  const card = (label, value, limit) => h("div", { class: "stat" },
    h("span", { class: "label" }, label),
    h("span", { class: "value" }, value),
    limit ? h("span", { class: "limit" }, `of ${number(limit)}`) : null);
  show(
    h("h1", {}, instance.entity.name || "Instance"),
    h("div", { class: "stats" },
      card("Models", number(usage.model_count.current), usage.model_count.limit),
      card("Deployments", number(usage.deployment_count.current), usage.deployment_count.limit),
      card("Predictions", number(usage.prediction_count.current)),
      card("Computation time", `${Number(usage.computation_time.current).toFixed(1)} s`)),
    h("p", { class: "muted" }, `Instance ${instance.metadata.guid} · plan ${instance.entity.plan}`));
}

// Models: the list, publishing, and one model's signatures.
function modelStatus(model) {
  const latest = model.entity.latest_version;
  const reason = latest && latest.status_details && latest.status_details.message;
  return h("span", {}, statusBadge(model.entity.status),
    model.entity.status === "invalid" && reason ? h("span", { class: "reason" }, reason) : null);
}

// The list is refreshed in place (while a model is inspected, and after a publish), so the
// publish form keeps its progress and message.
async function modelsView() {
  show(h("h1", {}, "Models"), publishForm(), h("div", { id: "models" }), problemBox());
  await refreshModels();
}

async function refreshModels() {
  const list = await fetched(api("GET", `${instancePath()}/published_models?limit=1000`));
  const rows = list.resources.map((model) => h("tr", {},
    h("td", {}, h("a", { href: `#/models/${model.metadata.guid}` }, model.entity.name)),
    h("td", {}, modelStatus(model)),
    h("td", { class: "num" }, number(model.entity.deployments.count)),
    h("td", {}, when(model.metadata.created_at))));
  const shown = $("#models");
  if (!shown) return;
  shown.replaceChildren(h("table", {},
    h("caption", {}, `${list.count} published model${list.count === 1 ? "" : "s"}`),
    h("thead", {}, h("tr", {}, ["Name", "Status", "Deployments", "Published"].map(
      (label) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, rows)));
  const inspecting = list.resources.some((model) => model.entity.status === "inspecting");
  if (inspecting && polling === null) poll(refreshModels);
  return inspecting;
}

const ARCHIVE_TYPES = { ".zip": "application/zip", ".tar": "application/x-tar" };
function archiveType(name) {
  const found = Object.keys(ARCHIVE_TYPES).find((suffix) => name.toLowerCase().endsWith(suffix));
  return found ? ARCHIVE_TYPES[found] : "application/gzip";
}

function publishForm() {
  let chosen = null;
  const name = h("input", { id: "model-name", name: "name", required: true, maxlength: 256 });
  const file = h("input", { id: "model-file", type: "file", accept: ".tar.gz,.tgz,.tar,.zip" });
  const fileName = h("span", { id: "model-file-name", class: "muted" }, "No archive chosen");
  const progress = h("progress", { id: "upload-progress", max: 1, value: 0, hidden: true,
    "aria-label": "Upload progress" });
  const message = h("p", { id: "publish-message", role: "status" });
  const choose = (picked) => {
    chosen = picked;
    fileName.textContent = picked ? `${picked.name} (${number(picked.size)} bytes)` : "No archive chosen";
    if (picked && !name.value) name.value = picked.name.replace(/\.(tar\.gz|tgz|tar|zip)$/i, "");
  };
  file.addEventListener("change", () => choose(file.files[0] || null));
  const drop = h("div", { id: "drop-zone", class: "drop" },
    h("label", { for: "model-file" }, "SavedModel archive (.tar.gz or .zip): choose a file or drop it here"),
    file, fileName);
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0] || null);
  });
  const submit = async (event) => {
    event.preventDefault();
    message.className = "";
    if (!chosen) { message.textContent = "Choose a SavedModel archive first."; message.className = "error"; return; }
    if (!name.value.trim()) { message.textContent = "Give the model a name."; message.className = "error"; return; }
    button.disabled = true;
    try {
      const created = await api("POST", `${instancePath()}/published_models`,
        { name: name.value.trim(), model_type: "tensorflow" });
      const guid = created.metadata.guid;
      progress.hidden = false;
      message.textContent = "Uploading…";
      try {
        await upload(`${instancePath()}/published_models/${guid}/content`, chosen, archiveType(chosen.name),
          (done) => { progress.value = done; });
      } catch (error) {
        await api("DELETE", `${instancePath()}/published_models/${guid}`).catch(() => {});
        if (error.status === 413 || error.status === 0) {
          error.message = `${error.message} Archives too large for one request are published with ` +
            "`tfbatch models publish`, which uploads straight to the bucket.";
        }
        throw error;
      }
      progress.value = 1;
      message.textContent = `Published ${name.value.trim()}; it is being inspected.`;
      await refreshModels();
    } catch (error) {
      message.textContent = error.message;
      message.className = "error";
    } finally {
      button.disabled = false;
    }
  };
  const button = h("button", { type: "submit" }, "Publish");
  return h("form", { id: "publish-form", class: "card", onsubmit: submit },
    h("h2", {}, "Publish a model"),
    h("label", { for: "model-name" }, "Name"), name, drop, progress, message, button);
}

function tensorsTable(caption, tensors) {
  return h("table", { class: "compact" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Tensor"), h("th", { scope: "col" }, "dtype"),
      h("th", { scope: "col" }, "shape"))),
    h("tbody", {}, tensors.map((tensor) => h("tr", {},
      h("td", {}, tensor.name), h("td", {}, tensor.dtype),
      h("td", {}, `[${(tensor.shape || []).map((dim) => (dim === null || dim < 0 ? "?" : dim)).join(", ")}]`)))));
}

async function modelView(guid) {
  const model = await fetched(api("GET", `${instancePath()}/published_models/${guid}`));
  const latest = model.entity.latest_version || {};
  const signatures = latest.signatures || [];
  const remove = async () => {
    if (!(await confirmDelete(`Delete model ${model.entity.name}? Its archive and versions are removed.`))) return;
    try {
      await api("DELETE", `${instancePath()}/published_models/${guid}`);
      location.hash = "#/models";
    } catch (error) {
      showProblem(error);
    }
  };
  show(
    h("p", {}, h("a", { href: "#/models" }, "← Models")),
    h("h1", {}, model.entity.name),
    h("p", {}, modelStatus(model), " · ", `${number(model.entity.deployments.count)} deployments`,
      " · ", `version ${latest.guid || "none yet"}`),
    model.entity.description ? h("p", {}, model.entity.description) : null,
    h("h2", {}, "Signatures"),
    signatures.length ? signatures.map((signature) => h("section", { class: "card" },
      h("h3", {}, signature.name, signature.method ? h("span", { class: "muted" }, ` ${signature.method}`) : null),
      h("div", { class: "pair" }, tensorsTable("Inputs", signature.inputs || []),
        tensorsTable("Outputs", signature.outputs || []))))
      : h("p", { class: "muted" }, "No signatures yet: the model is not inspected as ready."),
    h("div", { class: "actions" },
      model.entity.status === "ready" ? h("a", { class: "button", href: `#/deploy/${guid}` }, "Deploy") : null,
      h("button", { type: "button", class: "danger", onclick: remove }, "Delete model")),
    problemBox());
  const inspecting = model.entity.status === "inspecting";
  if (inspecting && polling === null) poll(() => modelView(guid));
  return inspecting;
}

// A new batch deployment: the form, and the service's refusal shown next to the field it names.
function connectionFields(side, place) {
  const id = (name) => `${side}-${name}`;
  const field = (name, label, attrs = {}) => [
    h("label", { for: id(name) }, label),
    h("input", { id: id(name), dataset: { field: `${side}.${name === "bucket" || name === "prefix" ? place + "." : "connection."}${name}` }, ...attrs }),
    h("span", { class: "field-error", id: `${id(name)}-error`, role: "alert" }),
  ];
  return h("fieldset", { dataset: { field: side } },
    h("legend", {}, side === "input" ? "Input (files to score)" : "Output (where predictions go)"),
    h("label", { for: id("type") }, "Type"),
    h("select", { id: id("type") }, h("option", { value: "s3" }, "s3"),
      h("option", { value: "cloudobjectstorage" }, "cloudobjectstorage")),
    field("bucket", "Bucket", { required: true }),
    field("prefix", "Prefix (optional)"),
    field("url", "Endpoint URL (empty for AWS S3)", { type: "url", placeholder: "https://s3.example.com" }),
    field("access_key", "Access key", { required: true, autocomplete: "off" }),
    field("secret_key", "Secret key", { type: "password", required: true, autocomplete: "new-password" }),
    h("span", { class: "field-error", id: `${side}-error`, role: "alert" }));
}

async function deployView(preselected) {
  const list = await fetched(api("GET", `${instancePath()}/published_models?limit=1000`));
  const ready = list.resources.filter((model) => model.entity.status === "ready");
  const modelSelect = h("select", { id: "deploy-model", dataset: { field: "published_model.guid" }, required: true },
    ready.map((model) => h("option", { value: model.metadata.guid, selected: model.metadata.guid === preselected },
      model.entity.name)));
  const signatureSelect = h("select", { id: "deploy-signature", dataset: { field: "signature_name" } });
  const fillSignatures = () => {
    const model = ready.find((found) => found.metadata.guid === modelSelect.value);
    const signatures = (model && model.entity.latest_version && model.entity.latest_version.signatures) || [];
    signatureSelect.replaceChildren(...signatures.map((signature) => h("option", {
      value: signature.name, selected: signature.name === "serving_default" }, signature.name)));
  };
  modelSelect.addEventListener("change", fillSignatures);
  const message = h("p", { id: "deploy-message", role: "status" });
  const form = h("form", { id: "deploy-form", class: "card wide", novalidate: true },
    h("label", { for: "deploy-name" }, "Name"),
    h("input", { id: "deploy-name", dataset: { field: "name" }, required: true, maxlength: 256 }),
    h("span", { class: "field-error", id: "deploy-name-error", role: "alert" }),
    h("label", { for: "deploy-model" }, "Model"), modelSelect,
    h("span", { class: "field-error", id: "deploy-model-error", role: "alert" }),
    h("label", { for: "deploy-signature" }, "Signature"), signatureSelect,
    h("span", { class: "field-error", id: "deploy-signature-error", role: "alert" }),
    h("div", { class: "pair" }, connectionFields("input", "source"), connectionFields("output", "target")),
    message,
    h("button", { type: "submit" }, "Create deployment"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".field-error").forEach((span) => { span.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
    message.textContent = "";
    message.className = "";
    const side = (name, place) => ({
      type: $(`#${name}-type`).value,
      [place]: { bucket: $(`#${name}-bucket`).value.trim(), prefix: $(`#${name}-prefix`).value.trim() },
      connection: { access_key: $(`#${name}-access_key`).value, secret_key: $(`#${name}-secret_key`).value,
        url: $(`#${name}-url`).value.trim() },
    });
    const body = { name: $("#deploy-name").value.trim(), type: "batch",
      published_model: { guid: modelSelect.value }, input: side("input", "source"), output: side("output", "target") };
    if (signatureSelect.value) body.signature_name = signatureSelect.value;
    try {
      const created = await api("POST", `${instancePath()}/deployments`, body);
      form.querySelectorAll("input[type=password]").forEach((input) => { input.value = ""; });
      location.hash = `#/deployments/${created.metadata.guid}`;
    } catch (error) {
      placeError(form, error, message);
    }
  });
  show(h("h1", {}, "New batch deployment"),
    ready.length ? form : h("p", {}, "No model is ready yet. ", h("a", { href: "#/models" }, "Publish one first.")));
  fillSignatures();
}

// The field a refusal names ("input.source.bucket"), else the closest fieldset ("input"), else the form.
function placeError(form, error, fallback) {
  const name = error.target && error.target.type === "field" ? error.target.name : "";
  let target = null;
  for (let parts = name.split("."); parts.length && parts[0]; parts.pop()) {
    target = form.querySelector(`[data-field="${CSS.escape(parts.join("."))}"]`);
    if (target) break;
  }
  if (!target) {
    fallback.textContent = error.message;
    fallback.className = "error";
    return;
  }
  const span = target.tagName === "FIELDSET" ? target.querySelector(":scope > .field-error:last-child")
    : document.getElementById(`${target.id}-error`);
  span.textContent = error.message;
  if (target.tagName !== "FIELDSET") {
    target.setAttribute("aria-invalid", "true");
    target.setAttribute("aria-describedby", span.id);
    target.focus();
  }
}

// Deployments: a live list, and one deployment's page.
// Files per second over the last RATE_WINDOW_MS (commits land a group at a time, so the
// count between two refreshes jumps), from the samples this page has seen.
const RATE_WINDOW_MS = 30000;
const samples = new Map();  // deployment guid -> [{done, at}], oldest first
function rate(guid, done) {
  const now = Date.now();
  const seen = (samples.get(guid) || []).filter((sample) => now - sample.at <= RATE_WINDOW_MS);
  seen.push({ done, at: now });
  samples.set(guid, seen);
  const first = seen[0];
  return now - first.at >= POLL_MS ? Math.max(0, ((done - first.done) * 1000) / (now - first.at)) : 0;
}

function progressOf(details) {
  const total = details.total || 0;
  const done = (details.scored || 0) + (details.failed || 0);
  return h("progress", { max: total || 1, value: total ? done : details.status === "SUCCESS" ? 1 : 0,
    "aria-label": `${number(done)} of ${number(total)} files done` });
}

function countsOf(details) {
  return `${number(details.scored || 0)} scored · ${number(details.failed || 0)} failed · ` +
    `${number(details.pending || 0)} pending`;
}

async function deploymentsView() {
  const list = await fetched(api("GET", `${instancePath()}/deployments?limit=1000`));
  const rows = list.resources.map((deployment) => {
    const entity = deployment.entity;
    const details = entity.status_details || {};
    const guid = deployment.metadata.guid;
    const speed = rate(guid, (details.scored || 0) + (details.failed || 0));
    return h("tr", { dataset: { deployment: guid } },
      h("td", {}, h("a", { href: `#/deployments/${guid}` }, entity.name)),
      h("td", {}, statusBadge(entity.status)),
      h("td", {}, entity.type === "batch" ? [progressOf(details), h("span", { class: "counts" }, countsOf(details))]
        : "online"),
      h("td", { class: "num" }, speed ? speed.toFixed(1) : "–"),
      h("td", {}, details.path || ""));
  });
  const table = h("table", { id: "deployments" },
    h("caption", {}, `${list.count} deployment${list.count === 1 ? "" : "s"}`),
    h("thead", {}, h("tr", {}, ["Name", "Status", "Progress", "Files/s", "Path"].map(
      (label) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, rows));
  const existing = $("#deployments");
  if (existing) existing.replaceWith(table);
  else show(h("h1", {}, "Deployments"), h("p", {}, h("a", { class: "button", href: "#/deploy" }, "New deployment")),
    table, problemBox());
}

function failuresOf(groups) {
  return groups.flatMap((group) => group.failures);
}

async function deploymentView(guid) {
  const [deployment, files] = await fetched(Promise.all([
    api("GET", `${instancePath()}/deployments/${guid}`),
    api("GET", `${instancePath()}/deployments/${guid}/result_files?limit=20`).catch(() => ({ resources: [] })),
  ]));
  const entity = deployment.entity;
  const details = entity.status_details || {};
  const failures = failuresOf(files.resources);
  const place = (side) => {
    const where = entity[side] && (entity[side].source || entity[side].target);
    return where ? `${where.bucket}/${where.prefix || ""}` : "";
  };
  const body = h("div", { id: "deployment" },
    h("p", {}, statusBadge(entity.status), " ", h("span", { id: "counts" }, countsOf(details)),
      details.path ? h("span", { class: "muted" }, ` · ${details.path}`) : null),
    entity.type === "batch" ? progressOf(details) : null,
    h("dl", { class: "facts" },
      h("dt", {}, "Model"), h("dd", {}, entity.published_model.name),
      h("dt", {}, "Signature"), h("dd", {}, entity.signature_name),
      h("dt", {}, "Input"), h("dd", {}, place("input")),
      h("dt", {}, "Output"), h("dd", {}, place("output")),
      h("dt", {}, "Created"), h("dd", {}, when(deployment.metadata.created_at))),
    (details.failures || []).map((reason) => h("p", { class: "error" }, reason)),
    h("h2", {}, "Failures"),
    failures.length ? h("table", { id: "failures" },
      h("thead", {}, h("tr", {}, ["File", "Error", "Message"].map((label) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, failures.map((failure) => h("tr", {},
        h("td", { class: "file" }, failure.filename), h("td", {}, failure.code), h("td", {}, failure.message)))))
      : h("p", { class: "muted", id: "no-failures" }, "No file has failed."),
    h("h2", {}, "Newest result files"),
    files.resources.length ? h("table", { id: "result-files" },
      h("thead", {}, h("tr", {}, ["Written", "Files", "Scored", "Failed"].map(
        (label) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, files.resources.map((group) => h("tr", {},
        h("td", {}, when(group.committed_at)),
        h("td", { class: "file" }, group.files.map((key) => h("div", {}, key))),
        h("td", { class: "num" }, number(group.scored)), h("td", { class: "num" }, number(group.failed))))))
      : h("p", { class: "muted" }, "No result file yet."));
  const existing = $("#deployment");
  if (existing) {
    existing.replaceWith(body);
    return;
  }
  const remove = async () => {
    if (!(await confirmDelete(`Delete deployment ${entity.name}? Scoring stops; its result files stay.`))) return;
    try {
      stopPolling();
      await api("DELETE", `${instancePath()}/deployments/${guid}`);
      location.hash = "#/deployments";
    } catch (error) {
      showProblem(error);
    }
  };
  show(h("p", {}, h("a", { href: "#/deployments" }, "← Deployments")),
    h("h1", {}, entity.name), body,
    h("div", { class: "actions" }, h("button", { type: "button", class: "danger", onclick: remove },
      "Delete deployment")),
    problemBox());
}

// -- routing ---------------------------------------------------------------------------------
const routes = [
  [/^#\/overview$/, () => overview()],
  [/^#\/models$/, () => modelsView()],
  [/^#\/models\/([0-9a-f-]{36})$/, (guid) => modelView(guid)],
  [/^#\/deploy(?:\/([0-9a-f-]{36}))?$/, (guid) => deployView(guid)],
  [/^#\/deployments$/, () => { poll(deploymentsView); return deploymentsView(); }],
  [/^#\/deployments\/([0-9a-f-]{36})$/, (guid) => { poll(() => deploymentView(guid)); return deploymentView(guid); }],
];

async function route() {
  stopPolling();
  if (!session.valid()) return signOut();
  const hash = location.hash || "#/overview";
  const found = routes.find(([pattern]) => pattern.test(hash));
  if (!found) { location.hash = "#/overview"; return; }
  for (const link of document.querySelectorAll("#nav a")) {
    const href = link.getAttribute("href");
    if (hash === href || hash.startsWith(`${href}/`)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  show(h("p", { class: "muted" }, "Loading…"));
  const mine = current();
  try {
    await found[1](...hash.match(found[0]).slice(1));
  } catch (error) {
    if (error.status !== 401 && !error.stale && mine === current()) {
      show(h("p", { class: "error", role: "alert" }, error.message));
    }
  }
}

function signedIn() {
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  $("#who").hidden = false;
  $("#who").textContent = session.claims.sub;
  session.schedule();
  route();
}

function signOut(reason) {
  stopPolling();
  session.clear();
  $("#nav").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").hidden = true;
  $("#view").replaceChildren();
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = reason || "";
  $("#username").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = $("#username").value;
    const password = $("#password").value;
    try {
      const answer = await api("GET", "/v3/identity/token", undefined,
        { Authorization: `Basic ${btoa(unescape(encodeURIComponent(`${username}:${password}`)))}` });
      $("#password").value = "";
      session.set(answer.token);
      signedIn();
    } catch (error) {
      $("#sign-in-error").textContent = error.message;
    }
  });
  $("#sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", route);
  if (session.valid()) signedIn();
  else signOut();
});
