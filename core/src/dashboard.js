"use strict";
const $ = (s) => document.querySelector(s);
let token = sessionStorage.getItem("dossier-token") || "";
let selected = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: Object.assign({ "Authorization": "Bearer " + token }, body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  if (r.status === 401) { logout("Jeton refusé."); throw new Error("unauthorized"); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.message || r.statusText);
  return data;
}

function logout(msg) {
  token = ""; sessionStorage.removeItem("dossier-token");
  $("#app").hidden = true; $("#login").hidden = false; $("#login-error").textContent = msg || "";
}

function age(ms) {
  if (ms == null) return "–";
  const s = ms / 1000;
  return s < 60 ? s.toFixed(1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";
}

function filterBy(kind, status) {
  $("#f-kind").value = kind; $("#f-status").value = status; refresh();
}

async function retryDead(kind) {
  const r = await api("POST", "/v1/admin/queues/" + encodeURIComponent(kind) + "/retry-dead");
  flash(r.retried + " travaux " + kind + " relancés");
  refresh();
}

// A paused kind's jobs wait; its running ones finish. The reason is asked
// for, and shown to every operator.
async function pause(kind) {
  const reason = window.prompt("Suspendre " + kind + " : pourquoi ?", "");
  if (reason === null) return;
  await api("POST", "/v1/admin/queues/" + encodeURIComponent(kind) + "/pause", { reason });
  flash(kind + " suspendu");
  refresh();
}

async function resume(kind) {
  await api("POST", "/v1/admin/queues/" + encodeURIComponent(kind) + "/resume");
  flash(kind + " repris");
  refresh();
}

async function act(id, what) {
  if (what === "kill" && !confirm("Arrêter définitivement le travail " + id + " ?")) return;
  await api("POST", "/v1/admin/jobs/" + encodeURIComponent(id) + "/" + what, what === "kill" ? { reason: "arrêté depuis le tableau de bord" } : undefined);
  flash(what === "retry" ? "travail " + id + " relancé" : "travail " + id + " arrêté");
  refresh();
}

function flash(text) { $("#status").textContent = text; }

// The filter as the admin API takes it (blank fields match anything).
function currentFilter() {
  const f = {};
  for (const [field, id] of [["kind", "#f-kind"], ["status", "#f-status"], ["firm", "#f-firm"],
    ["client", "#f-client"], ["trace", "#f-trace"], ["error", "#f-error"]]) {
    const v = $(id).value.trim();
    if (v) f[field] = v;
  }
  return f;
}

// Every job of the filter: a dry run first says how many match and how
// many would change; nothing changes unless the operator confirms that.
async function bulk(action) {
  const verb = { retry: "relancés", kill: "arrêtés", reschedule: "reportés" }[action];
  const body = { action, filter: currentFilter() };
  if (action === "kill") body.reason = "arrêté depuis le tableau de bord";
  if (action === "reschedule") {
    const at = window.prompt("Reporter à quand ? (now, 30m, 12h, 2d, 2026-12-24…)", "1h");
    if (at === null) return;
    body.run_at = at;
  }
  try {
    const dry = await api("POST", "/v1/admin/jobs/bulk", Object.assign({ dry_run: true }, body));
    if (!dry.eligible) { flash("rien à changer : " + dry.matched + " travaux correspondent au filtre"); return; }
    const n = dry.matched + (dry.more ? " (et plus)" : "");
    if (!confirm(n + " travaux correspondent au filtre ; " + dry.eligible + " seront " + verb + ". Continuer ?")) return;
    const r = await api("POST", "/v1/admin/jobs/bulk", body);
    flash(r.applied + " travaux " + verb + (r.skipped ? ", " + r.skipped + " ignorés (changés entre-temps)" : "") + (r.more ? " ; il en reste : recommencez" : ""));
  } catch (e) {
    if (e.message !== "unauthorized") flash("refusé : " + e.message);
  }
  refresh();
}

async function showJob(id) {
  selected = id;
  const j = await api("GET", "/v1/admin/jobs/" + encodeURIComponent(id));
  $("#detail").hidden = false;
  $("#d-id").textContent = j.id;
  const body = $("#d-body"); body.replaceChildren();
  body.append(el("p", {}, "type ", el("b", {}, j.kind), " · état ", el("b", { class: j.status }, j.status),
    " · essais " + j.attempts + "/" + j.max_attempts, j.trace_id ? " · trace " + j.trace_id : ""));
  body.append(el("h3", {}, "Charge utile (secrets masqués)"), el("pre", {}, JSON.stringify(j.payload, null, 2)));
  if (j.errors && j.errors.length) {
    const t = el("table", {}, el("tr", {}, el("th", {}, "essai"), el("th", {}, "quand"), el("th", {}, "classe"), el("th", {}, "erreur")));
    for (const e of j.errors) t.append(el("tr", {}, el("td", {}, e.attempt), el("td", {}, new Date(e.at_ms).toLocaleString()), el("td", {}, e.class), el("td", {}, e.message)));
    body.append(el("h3", {}, "Essais et erreurs"), t);
  }
  // What the mail server answered (its queue id), to quote to its postmaster.
  if (j.kind === "invitation" && j.result && j.result.reply) {
    body.append(el("p", { class: "smtp-reply" }, "Réponse du serveur de courrier : ", el("code", {}, j.result.reply),
      j.result.repeats ? " · renvoyé à l'identique " + j.result.repeats + " fois après une réponse perdue" : ""));
  }
  if (j.result != null) body.append(el("h3", {}, "Résultat"), el("pre", {}, JSON.stringify(j.result, null, 2)));
}

async function refresh() {
  try {
    const [queues, jobs, workers, audit, firms, hooks] = await Promise.all([
      api("GET", "/v1/admin/queues"),
      api("GET", "/v1/admin/jobs?" + new URLSearchParams(Object.assign({ limit: "100" }, currentFilter()))),
      api("GET", "/v1/admin/workers"),
      api("GET", "/v1/admin/audit?limit=20"),
      api("GET", "/v1/admin/waiting-by-firm"),
      api("GET", "/v1/admin/webhooks"),
    ]);
    // Endpoints disabled for failing, or failing now: the firm's
    // application is not being told what happens.
    const nb = $("#webhooks-notice"); nb.replaceChildren();
    for (const h of hooks.filter((h) => h.state !== "enabled")) {
      const what = h.state === "disabled"
        ? "webhook désactivé : " + h.id + " (cabinet " + h.firm_id + ") — " + (h.disabled_reason || "") + " ; dossier webhook enable " + h.id
        : "webhook en échec depuis " + new Date(h.failing_since_ms).toLocaleString() + " : " + h.id + " (cabinet " + h.firm_id + ")";
      nb.append(el("li", { "data-endpoint": h.id, "data-state": h.state }, what));
    }
    nb.hidden = nb.children.length === 0;
    const fb = $("#firms tbody"); fb.replaceChildren();
    for (const f of firms) {
      const name = f.group == null ? el("td", {}, "(aucun)")
        : el("td", {}, el("a", { class: "count", onclick: () => { $("#f-firm").value = f.group; refresh(); } }, f.group));
      fb.append(el("tr", { "data-firm": f.group == null ? "" : f.group }, name,
        el("td", { class: "num" }, f.interactive + f.bulk), el("td", { class: "num" }, f.interactive), el("td", { class: "num" }, f.bulk)));
    }
    const kinds = $("#f-kind"); const chosen = kinds.value;
    for (const q of queues) if (![...kinds.options].some((o) => o.value === q.kind)) kinds.append(el("option", { value: q.kind }, q.kind));
    kinds.value = chosen;
    const qb = $("#queues tbody"); qb.replaceChildren();
    for (const q of queues) {
      const cell = (status, n) => el("td", { class: "num" }, n ? el("a", { class: "count", onclick: () => filterBy(q.kind, status) }, n) : "0");
      const name = el("td", {}, q.kind);
      if (q.paused) name.append(" ", el("span", { class: "paused", "data-paused": q.kind, title: "par " + q.paused.by }, "suspendu" + (q.paused.reason ? " : " + q.paused.reason : "")));
      const actions = el("td", {});
      if (q.dead) actions.append(el("button", { "data-retry-dead": q.kind, onclick: () => retryDead(q.kind) }, "relancer les morts"), " ");
      actions.append(q.paused
        ? el("button", { "data-resume": q.kind, onclick: () => resume(q.kind) }, "reprendre")
        : el("button", { "data-pause": q.kind, onclick: () => pause(q.kind) }, "suspendre"));
      qb.append(el("tr", { "data-kind": q.kind },
        name, cell("pending", q.pending), cell("scheduled", q.scheduled), cell("running", q.running),
        cell("retrying", q.retrying), cell("done", q.done), cell("dead", q.dead), el("td", {}, age(q.oldest_pending_age_ms)),
        actions));
    }
    const jb = $("#jobs tbody"); jb.replaceChildren();
    for (const j of jobs) {
      const buttons = el("td", {});
      if (["dead", "scheduled", "retrying"].includes(j.status)) buttons.append(el("button", { "data-retry": j.id, onclick: () => act(j.id, "retry") }, "relancer"), " ");
      if (["pending", "scheduled", "retrying", "running"].includes(j.status)) buttons.append(el("button", { class: "danger", "data-kill": j.id, onclick: () => act(j.id, "kill") }, "arrêter"));
      jb.append(el("tr", { "data-job": j.id, "data-status": j.status },
        el("td", {}, el("a", { class: "count", onclick: () => showJob(j.id) }, j.id)), el("td", {}, j.kind),
        el("td", { class: j.status }, j.status), el("td", { class: "num" }, j.attempts + "/" + j.max_attempts),
        el("td", {}, j.group || ""), el("td", {}, j.subject || ""),
        el("td", {}, j.last_error || ""), buttons));
    }
    const f = currentFilter();
    $("#filter-label").textContent = [f.kind || "tous types", f.status || "tous états"]
      .concat(f.firm ? ["cabinet " + f.firm] : [], f.client ? ["client " + f.client] : [],
        f.trace ? ["trace " + f.trace] : [], f.error ? ["erreur « " + f.error + " »"] : []).join(" · ");
    const wb = $("#workers tbody"); wb.replaceChildren();
    const now = Date.now();
    for (const w of workers) wb.append(el("tr", {}, el("td", {}, w.name), el("td", {}, w.host), el("td", { class: "num" }, w.running),
      el("td", {}, "il y a " + age(now - w.last_heartbeat_ms)), el("td", {}, w.kinds.join(", "))));
    const ab = $("#audit tbody"); ab.replaceChildren();
    for (const a of audit) ab.append(el("tr", { "data-action": a.action, "data-target": a.target },
      el("td", {}, new Date(a.at_ms).toLocaleString()), el("td", {}, a.actor), el("td", {}, a.action),
      el("td", {}, a.target), el("td", {}, Object.keys(a.detail || {}).length ? JSON.stringify(a.detail) : "")));
    if (selected) await showJob(selected);
    $("#status").dataset.refreshed = String(now);
  } catch (e) {
    if (e.message !== "unauthorized") flash("erreur : " + e.message);
  }
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("dossier-token", token);
  start();
});
$("#f-kind").addEventListener("change", refresh);
$("#f-status").addEventListener("change", refresh);
for (const id of ["#f-firm", "#f-client", "#f-trace", "#f-error"]) $(id).addEventListener("change", refresh);
$("#filter").addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
$("#bulk-retry").addEventListener("click", () => bulk("retry"));
$("#bulk-reschedule").addEventListener("click", () => bulk("reschedule"));
$("#bulk-kill").addEventListener("click", () => bulk("kill"));

let timer = null;
function start() {
  if (!token) { logout(); return; }
  $("#login").hidden = true; $("#app").hidden = false;
  refresh();
  clearInterval(timer); timer = setInterval(refresh, 2000);
}
start();
