// Sagaz console: one small module, no dependencies. It renders the member's
// JSON API (/api/...) and polls the endpoint of the page shown every few
// seconds while the tab is visible (one request per interval per open tab).
//
// Logins: when the member has an admin token, every /api route needs a token,
// reads included. The console then shows the login form in place of any page
// until the user logs in (POST /api/session with an admin or a read-only
// token gives a session cookie), and again when a later request answers 401
// (the session expired or was ended): the URL is kept, so logging in again
// shows the same page. A read-only login shows everything with the actions
// disabled. Without an admin token (loopback only) nothing needs a login.

const INTERVAL = 5000; // ms between refreshes of the page shown
const STATUSES = ["pending", "executing", "compensating", "completed", "rolled_back", "failed", "resolved", "parked"];
const REASONS = ["decode", "transform_error", "transform_panic", "missing_key", "bad_context", "oversized", "no_route"];

const main = document.getElementById("main");
// session is the answer of GET /api/session: {token_required,
// authenticated, read_only, expires}; null until it is known.
let session = null;
let loginReason = ""; // why the login form is shown again (expired, logged out)
let page = null; // {refresh, interval}
let timer = 0;
let ctl = new AbortController();

// ---------- helpers ----------

// h builds an element: h("a", {href: "#/"}, "text", child...). Text is always
// set as text, never parsed as HTML.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

// kids drops the absent (null, undefined, false) from children passed to
// append or replaceChildren, which would show them as text.
function kids(...xs) {
  return xs.flat().filter((x) => x !== undefined && x !== null && x !== false);
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const kid of kids.flat()) if (kid) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}

// api calls the member's JSON API. A 401 on anything but the login itself
// means this browser has no (more) session: the login form takes the page's
// place and the error is marked sessionLost.
async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin", signal: ctl.signal };
  if (method !== "GET" && method !== "HEAD") {
    // Every state-changing request is JSON, also without a body: in loopback
    // mode the member refuses any other Content-Type (415).
    opts.headers["Content-Type"] = "application/json";
    if (body !== undefined) opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch { /* empty body */ }
  // A question about one saga that another member answered (the owner of
  // its partition): the page names that member.
  const by = r.headers.get("Sagaz-Answered-By");
  if (by && data && typeof data === "object") data.answered_by = by;
  if (!r.ok) {
    const e = new Error(data && data.error ? `${data.error}: ${data.detail}` : `${r.status} ${r.statusText}`);
    e.status = r.status;
    if (r.status === 401 && path !== "/api/session") {
      e.sessionLost = true;
      sessionLost();
    }
    throw e;
  }
  return data;
}

function toast(msg, bad) {
  const box = document.getElementById("toast");
  const d = h("div", { class: bad ? "bad" : "" }, msg);
  box.append(d);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => d.remove(), bad ? 9000 : 5000);
}

function fmtTime(s) {
  if (!s) return "";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
}

function fmtDur(ms) {
  if (ms < 0 || !isFinite(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function badge(status) {
  return h("span", { class: `badge s-${status}` }, String(status).replace("_", " "));
}

function table(caption, heads, rows, attrs) {
  return h("table", attrs || {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, heads.map((c) => h("th", { scope: "col", class: /^(n|lag|end|committed|fired|skipped|count|attempts)$/i.test(c) ? "num" : "" }, c)))),
    h("tbody", {}, rows));
}

function sagaLink(id) {
  return h("a", { href: "#/saga/" + encodeURIComponent(id) }, id);
}

function hashParams() {
  const raw = location.hash.slice(1) || "/";
  const i = raw.indexOf("?");
  return { path: i < 0 ? raw : raw.slice(0, i), params: new URLSearchParams(i < 0 ? "" : raw.slice(i + 1)) };
}

function go(path, params) {
  const q = params ? params.toString() : "";
  location.hash = path + (q ? "?" + q : "");
}

// isoToLocal turns an RFC 3339 time into a datetime-local input value.
function isoToLocal(iso) {
  const d = new Date(iso);
  if (!iso || isNaN(d)) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

// needsLogin: the member wants a token and this browser has no session.
function needsLogin() {
  return !!session && session.token_required && !session.authenticated;
}

// readOnly: logged in with a read-only token; actions are disabled.
function readOnly() {
  return !!session && session.token_required && session.authenticated && !!session.read_only;
}

const READ_ONLY_TITLE = "read-only login: actions need an admin token";

// actionButton is a button for an action: disabled, with the reason as its
// title, under a read-only login. attrs.disabled/title give other reasons.
function actionButton(attrs, label) {
  const ro = readOnly();
  return h("button", { type: "button", ...attrs, disabled: ro || attrs.disabled, title: ro ? READ_ONLY_TITLE : attrs.title,
    "aria-describedby": ro ? "readonly-note" : undefined }, label);
}

// loginAsAdmin is a link to the login form that comes back to the page
// shown when it is followed.
function loginAsAdmin(id) {
  return h("a", { href: "#/login", id, onclick: (ev) => {
    ev.preventDefault();
    location.hash = "#/login?" + new URLSearchParams({ next: location.hash || "#/" });
  } }, "Log in as admin");
}

// readOnlyNote says, on a page with actions, why they are disabled.
function readOnlyNote() {
  if (!readOnly()) return null;
  return h("p", { class: "banner note-ro", id: "readonly-note" },
    "Read-only login: you can see everything, but the actions (retry, resolve, cancel, pause, resume, trigger now, replay) need an admin token. ",
    loginAsAdmin());
}

// act runs an action and reports it. A 401 brings the login form back (the
// session ended); a 403 is a read-only login.
async function act(what, method, path, body) {
  try {
    const out = await api(method, path, body);
    toast(`${what}: accepted`);
    await refreshNow();
    return out;
  } catch (e) {
    if (e.name === "AbortError") return null;
    if (e.sessionLost) toast(`${what}: not done — the session ended; log in again (401)`, true);
    else if (e.status === 403 && readOnly()) toast(`${what}: refused — read-only login, log in with an admin token to act (403)`, true);
    else toast(`${what} failed: ${e.message}`, true);
    return null;
  }
}

// ---------- session ----------

async function loadSession() {
  try { session = await api("GET", "/api/session"); } catch { /* keep the last; pages say what failed */ }
  renderSession();
}

function renderSession() {
  const box = document.getElementById("session");
  box.replaceChildren();
  if (!session) return;
  if (!session.token_required) {
    box.append(h("span", { id: "session-state" }, "No admin token set: open without login (loopback only)"));
  } else if (session.authenticated) {
    const exp = session.expires ? `session until ${fmtTime(session.expires)}` : undefined;
    box.append(...kids(h("span", { id: "session-state", title: exp }, session.read_only ? "Logged in (read-only)" : "Logged in (admin)"),
      session.read_only ? loginAsAdmin("login-admin") : null,
      h("button", { type: "button", id: "logout", onclick: logout }, "Log out")));
  } else {
    box.append(h("span", { id: "session-state" }, "Not logged in"));
  }
}

// sessionLost: a request answered 401, so this browser's session is gone
// (expired, logged out elsewhere, the member restarted). The login form
// replaces the page; the URL stays, so logging in shows the same page.
function sessionLost() {
  if (needsLogin()) return; // the form is shown already
  session = { ...(session || {}), token_required: true, authenticated: false, read_only: false };
  loginReason = "Your session ended (it expired, was logged out, or the member restarted): log in again to go on.";
  renderSession();
  route();
}

async function logout() {
  try {
    session = await api("DELETE", "/api/session");
    loginReason = "Logged out.";
    toast("Logged out");
  } catch (e) {
    toast(`Log out failed: ${e.message}`, true);
    await loadSession();
  }
  renderSession();
  route();
}

const SECTION_NAMES = { overview: "the overview", sagas: "sagas", schedules: "triggers and schedules", deadletters: "dead letters" };

// pageLogin shows the login form: in place of the page asked for when a
// login is needed (explicit false: logging in shows that page), or at
// #/login (explicit: logging in goes to ?next=, else the overview).
function pageLogin(params, explicit, section) {
  main.replaceChildren();
  const title = h("h1", { id: "login-title" }, "Log in");
  if (!session) {
    main.append(title, h("p", { class: "banner bad" }, "Could not read the login state from the member (GET /api/session): reload the page."));
    return;
  }
  if (!session.token_required) {
    main.append(title, h("p", { id: "login-open" }, "This member has no admin token: everything is open without logging in (it listens on loopback only)."));
    return;
  }
  const input = h("input", { type: "password", id: "login-token", name: "token", autocomplete: "current-password", required: true,
    spellcheck: "false", autocapitalize: "off", "aria-describedby": "login-help login-error" });
  const error = h("p", { id: "login-error", class: "err", role: "alert" });
  const submit = h("button", { class: "primary", type: "submit", id: "login-submit" }, "Log in");
  const form = h("form", { class: "login", id: "login-form", "aria-labelledby": "login-title" },
    h("label", { for: "login-token" }, "Token (admin or read-only)"), input, error, submit,
    h("p", { class: "note", id: "login-help" }, "An admin token can read and act; a read-only token can only read. " +
      "The token is exchanged for a session cookie (HttpOnly, SameSite=Strict) and not kept by the page."));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter a token.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      session = await api("POST", "/api/session", { token });
      input.value = "";
      loginReason = "";
      renderSession();
      toast(session.read_only ? "Logged in (read-only)" : "Logged in");
      const next = explicit ? params.get("next") || "#/" : location.hash;
      if (explicit && next !== location.hash) location.hash = next; // route() follows the hashchange
      else route();
    } catch (e) {
      if (e.name === "AbortError") return;
      submit.disabled = false;
      input.value = "";
      input.setAttribute("aria-invalid", "true");
      error.textContent = e.status === 401 ? "Wrong token: it is neither an admin nor a read-only token of this member." : `Log in failed: ${e.message}`;
      input.focus();
    }
  });
  const why = explicit
    ? session.authenticated ? `You are logged in${session.read_only ? " with a read-only token" : ""}. Log in with another token to change it.` : ""
    : `This member needs a token to read its data: log in to see ${SECTION_NAMES[section] || "this page"}.`;
  main.append(...kids(title,
    loginReason && !explicit ? h("p", { class: "banner", id: "login-reason" }, loginReason) : null,
    why ? h("p", { class: "note" }, why) : null, form));
  input.focus();
}

// ---------- overview ----------

function lineChart(label, series, unit) {
  const W = 480, H = 160, L = 40, B = 18, T = 8;
  const pts = series.flatMap((s) => s.points);
  const fig = h("figure", {}, h("figcaption", {}, label));
  if (new Set(pts.map((p) => p[0])).size < 2) {
    fig.append(h("p", { class: "note" }, "Collecting samples… (one per refresh while a console is open)"));
    return fig;
  }
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
  const ymax = Math.max(1, ...pts.map((p) => p[1]));
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 4);
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${label}: ${series.map((s) => `${s.name} ${s.points.length ? Math.round(s.points[s.points.length - 1][1] * 100) / 100 : 0}`).join(", ")}` },
    svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svg("text", { x: 2, y: T + 8 }, `${Math.round(ymax * 100) / 100}${unit || ""}`),
    svg("text", { x: 2, y: H - B }, "0"),
    svg("text", { x: L, y: H - 4 }, new Date(t0).toLocaleTimeString()),
    svg("text", { x: W - 60, y: H - 4 }, new Date(t1).toLocaleTimeString()),
    series.map((s) => svg("polyline", { class: `c-${s.cls}`, points: s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ") })));
  fig.append(chart, h("div", { class: "legend" }, series.map((s) => h("span", {}, h("i", { class: `c-${s.cls}` }), s.name))));
  return fig;
}

function pageOverview() {
  const data = h("div", { id: "overview" });
  main.replaceChildren(h("h1", {}, "Overview"),
    h("p", { class: "note" }, "Counts are this member's (the partitions it runs). Throughput and history are sampled while a console is open."), data);
  return {
    async refresh() {
      const ov = await api("GET", "/api/overview");
      const hist = ov.history || [];
      const ready = h("div", { class: `banner ${ov.ready ? "ok" : "bad"}`, id: "readiness" },
        ov.ready ? "Ready: recovery done, group joined, partitions restored." : `Not ready: ${ov.not_ready}`);
      const cards = h("div", { class: "cards", id: "status-cards" }, STATUSES.map((st) =>
        h("a", { class: "card", href: `#/sagas?status=${st}`, "data-status": st },
          h("span", { class: "n" }, ov.by_status[st] || 0), h("span", { class: `l s-${st}` }, st.replace("_", " ")))));
      const t = (s) => new Date(s.at).getTime();
      const statusSeries = STATUSES.map((st) => ({ name: st.replace("_", " "), cls: st, points: hist.map((s) => [t(s), s.by_status[st] || 0]) }));
      const rate = (name) => {
        const out = [];
        for (let i = 1; i < hist.length; i++) {
          const a = hist[i - 1], b = hist[i];
          const dt = (t(b) - t(a)) / 1000;
          const dv = (b.counters[name] || 0) - (a.counters[name] || 0);
          if (dt > 0 && dv >= 0 && name in b.counters) out.push([t(b), dv / dt]);
        }
        return out;
      };
      const charts = h("div", { class: "charts" },
        lineChart("Sagas by status over time", statusSeries),
        lineChart("Throughput (sagas per second)", [
          { name: "started", cls: "started", points: rate("started") },
          { name: "finished", cls: "finished", points: rate("finished") }], "/s"));
      const names = Object.keys(ov.by_saga).sort();
      const bySaga = table("Sagas by saga and status", ["Saga", ...STATUSES, "Total"], names.map((n) => {
        const row = ov.by_saga[n];
        const total = STATUSES.reduce((a, st) => a + (row[st] || 0), 0);
        return h("tr", {}, h("th", { scope: "row" }, h("a", { href: `#/sagas?saga=${encodeURIComponent(n)}` }, n)),
          STATUSES.map((st) => h("td", { class: "num" }, row[st] || 0)), h("td", { class: "num" }, total));
      }), { id: "by-saga" });
      const g = ov.group;
      const lag = g ? table("Consumer lag per partition (log end minus committed offset)", ["Topic", "Partition", "Committed", "End", "Lag", "Member"],
        g.lag.map((l) => h("tr", {}, h("td", {}, l.topic), h("td", { class: "num" }, l.partition), h("td", { class: "num" }, l.committed),
          h("td", { class: "num" }, l.end), h("td", { class: "num" }, l.lag < 0 ? "unknown" : l.lag), h("td", { class: "id" }, l.member_id || "—"))), { id: "lag" })
        : h("p", { class: "banner bad" }, `Group: ${ov.group_error || "not available"}`);
      const members = g ? table(`Members of group ${g.group} (${g.state})`, ["Member", "Client", "Host", "Partitions"],
        g.members.map((m) => h("tr", { class: m.self ? "self" : "" },
          h("td", { class: "id" }, m.member_id, m.instance_id ? ` (instance ${m.instance_id})` : "", m.self ? h("strong", {}, " — this member") : ""),
          h("td", {}, m.client_id), h("td", {}, m.host),
          h("td", {}, m.partitions.map((p) => `${p.topic}/${p.partition}`).join(", ")))), { id: "members" }) : null;
      data.replaceChildren(...kids(ready, cards,
        h("p", { class: "note" }, `In this process: ${ov.pending_in_process} queued, ${ov.executing_in_process} executing.`,
          ov.stale_copies ? ` ${ov.stale_copies} sagas in this store belong to partitions another member runs now (not counted).` : "",
          ov.store_error ? ` Store: ${ov.store_error}` : ""),
        charts, h("h2", {}, "By saga"), bySaga, h("h2", {}, "Consumer group"), members, lag,
        h("p", { class: "note" }, `Owned partitions: ${ov.owned_partitions.map((p) => `${p.topic}/${p.partition}`).join(", ") || "none"}.`)));
    },
  };
}

// ---------- sagas ----------

let sagaNames = null;
async function loadSagaNames() {
  if (sagaNames) return sagaNames;
  const tr = await api("GET", "/api/triggers");
  sagaNames = [...new Set(tr.triggers.map((t) => t.saga))].sort();
  return sagaNames;
}

function pageSagas(params) {
  const sel = (id, label, opts, value) => h("label", {}, label,
    h("select", { id, name: id.slice(2) }, h("option", { value: "" }, "any"), opts.map((o) => h("option", { value: o, selected: o === value }, o))));
  const sagaSel = sel("f-saga", "Saga", [], params.get("saga") || "");
  const form = h("form", { class: "filters", id: "saga-filters", role: "search", "aria-label": "Filter sagas" },
    sagaSel,
    sel("f-status", "Status", STATUSES, params.get("status") || ""),
    h("label", {}, "Created from", h("input", { type: "datetime-local", id: "f-since", value: isoToLocal(params.get("since")) })),
    h("label", {}, "Created before", h("input", { type: "datetime-local", id: "f-until", value: isoToLocal(params.get("until")) })),
    h("label", {}, "Idempotency key", h("input", { type: "search", id: "f-key", value: params.get("key") || "" })),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("button", { type: "button", onclick: () => go("/sagas") }, "Clear"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const f of ["saga", "status", "key"]) {
      const v = document.getElementById("f-" + f).value.trim();
      if (v) q.set(f, v);
    }
    for (const f of ["since", "until"]) {
      const v = document.getElementById("f-" + f).value;
      if (v) q.set(f, new Date(v).toISOString());
    }
    go("/sagas", q);
  });
  const idInput = h("input", { type: "search", id: "f-id", placeholder: "topic:partition:offset:saga", size: 40 });
  const idForm = h("form", { class: "filters", id: "saga-search", role: "search", "aria-label": "Open a saga by id" },
    h("label", {}, "Saga ID", idInput), h("button", { type: "submit" }, "Open"));
  idForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (idInput.value.trim()) location.hash = "#/saga/" + encodeURIComponent(idInput.value.trim());
  });
  const data = h("div", { id: "sagas" });
  const title = h("h1", {}, "Sagas");
  const scope = h("p", { class: "note", id: "sagas-scope" });
  main.replaceChildren(title, scope, form, idForm, data);
  loadSagaNames().then((names) => {
    const s = sagaSel.querySelector("select");
    for (const n of names) s.append(h("option", { value: n }, n));
    s.value = params.get("saga") || "";
  }).catch(() => {});
  return {
    async refresh() {
      const q = new URLSearchParams();
      for (const f of ["saga", "status", "since", "until", "key", "cursor"]) if (params.get(f)) q.set(f, params.get(f));
      q.set("limit", "50");
      const out = await api("GET", "/api/sagas?" + q);
      // A member of a group answers for the whole group (it asks every
      // member for the partitions it owns); one that is not says whose.
      if (out.members !== undefined) {
        title.textContent = "Sagas — the whole group";
        const missing = out.unavailable || [];
        scope.replaceChildren(`${out.members - missing.length} of ${out.members} member${out.members === 1 ? "" : "s"} answered; each lists the sagas of the partitions it runs.`,
          ...missing.map((m) => h("span", { class: "err", "data-member": m.member_id },
            ` Missing: the sagas of ${m.partitions} partition${m.partitions === 1 ? "" : "s"} of member ${m.member_id}${m.url ? " (" + m.url + ")" : ""}: ${m.error}.`)));
      } else {
        title.textContent = "Sagas — this member's sagas";
        scope.textContent = "This list reads this member's store: the sagas of the partitions it runs (and copies left from before a rebalance).";
      }
      const rows = out.sagas.map((s) => h("tr", { "data-id": s.id, "data-status": s.status },
        h("td", { class: "id" }, sagaLink(s.id)), h("td", {}, s.saga), h("td", {}, badge(s.status)), h("td", {}, s.trigger),
        h("td", {}, s.idempotency_key || ""), h("td", {}, fmtTime(s.created_at)), h("td", {}, fmtTime(s.updated_at)),
        h("td", { class: "err" }, s.parked ? `parked: ${s.parked.reason}` : s.error || ""), h("td", {}, s.owned_here ? "" : `run by ${s.owner || "another member"}`)));
      const next = new URLSearchParams(params);
      next.set("cursor", out.next_cursor || "");
      const first = new URLSearchParams(params);
      first.delete("cursor");
      data.replaceChildren(
        out.sagas.length ? table(null, ["ID", "Saga", "Status", "Trigger", "Key", "Created", "Updated", "Error", ""], rows, { id: "sagas-table" })
          : h("p", { id: "no-sagas" }, out.next_cursor ? "Nothing matched in the sagas read for this page; go on to older ones." : "No sagas match."),
        h("div", { class: "pager" },
          params.get("cursor") ? h("button", { type: "button", onclick: () => go("/sagas", first) }, "First page") : null,
          out.next_cursor ? h("button", { type: "button", id: "next-page", onclick: () => go("/sagas", next) }, "Next page") : null,
          h("span", { class: "muted" }, `${out.sagas.length} shown`)));
    },
  };
}

// ---------- one saga ----------

// historyTable shows what operators did to a saga: when, what, by whom,
// why, and the context a retry with an edited context replaced.
function historyTable(history) {
  if (!history || !history.length) return null;
  const rows = history.map((e) => h("tr", { "data-action": e.action },
    h("td", {}, fmtTime(e.at)), h("td", {}, e.action.replaceAll("_", " ")), h("td", {}, e.by || "—"), h("td", {}, e.reason || ""),
    h("td", {}, e.previous_context !== undefined ? h("details", {}, h("summary", {}, `replaced context (${e.previous_context_bytes} bytes)`),
      h("pre", {}, JSON.stringify(e.previous_context, null, 2)))
      : e.previous_context_truncated ? h("details", {}, h("summary", {}, `replaced context (${e.previous_context_bytes} bytes, ${e.previous_context_prefix ? "the first kept" : "not kept"})`),
        e.previous_context_prefix ? h("pre", {}, e.previous_context_prefix + "…") : null) : "")));
  return [h("h2", {}, "History"), table(null, ["At", "Action", "By", "Reason", ""], rows, { id: "saga-history" })];
}

function pageSaga(id) {
  const data = h("div", { id: "saga" });
  const path = "/api/sagas/" + encodeURIComponent(id);
  // Resolve a failed saga by hand: outside the part the refresh redraws, so
  // that a reason being typed survives it.
  const reason = h("input", { id: "resolve-reason", name: "reason", size: 60, maxlength: 1024,
    placeholder: "what was done about it (recorded in the saga's history)" });
  const resolveButton = h("button", { type: "submit", id: "act-resolve" }, "Mark resolved");
  const resolveForm = h("form", { id: "resolve-form", class: "actions resolve", hidden: true, onsubmit: async (ev) => {
    ev.preventDefault();
    if (!reason.value.trim()) {
      toast("Resolve: say what was done about the saga (a reason is required)", true);
      reason.focus();
      return;
    }
    if (await act("Resolve", "POST", path + "/resolve", { reason: reason.value })) reason.value = "";
  } }, h("label", { for: "resolve-reason" }, "Failed, and dealt with by hand? "), reason, resolveButton);
  // A parked saga moves onto the current definition: its recorded steps
  // keep their names unless mapped here ("old=new, other="). Outside the
  // redrawn part too, so that a mapping being typed survives a refresh.
  const mapping = h("input", { id: "retry-map", type: "text", size: "40", placeholder: "old=new, other= (optional)",
    title: "how the recorded steps map onto the current definition's (by name when empty; old= leaves old's effect uncompensated)" });
  const mapRow = h("div", { id: "retry-map-row", class: "actions", hidden: true },
    h("label", { for: "retry-map" }, "Step mapping for “Retry with the current definition”: "), mapping);
  main.replaceChildren(h("h1", {}, "Saga ", h("span", { class: "id" }, id)), resolveForm, mapRow, data);
  return {
    async refresh() {
      let s;
      try {
        s = await api("GET", "/api/sagas/" + encodeURIComponent(id));
      } catch (e) {
        if (e.status === 404 || e.status === 400) {
          data.replaceChildren(h("p", { class: "banner bad", id: "saga-error" }, e.message));
          return;
        }
        throw e;
      }
      const parked = s.status === "parked";
      const canRetry = s.status === "failed" || parked, canCancel = s.status === "pending" || s.status === "executing" || parked;
      resolveForm.hidden = s.status !== "failed";
      resolveButton.disabled = readOnly();
      resolveButton.title = readOnly() ? READ_ONLY_TITLE : "";
      mapRow.hidden = !parked;
      const retryBody = () => {
        if (!parked || !mapping.value.trim()) return undefined;
        const steps = {};
        for (const pair of mapping.value.split(",").map((x) => x.trim()).filter(Boolean)) {
          const at = pair.indexOf("=");
          if (at <= 0) throw new Error(`"${pair}": want old=new`);
          steps[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
        }
        return { steps };
      };
      const actions = h("div", { class: "actions" },
        actionButton({ id: "act-retry", disabled: !canRetry, title: canRetry ? undefined : s.status === "resolved" ? "a resolved saga is finished for good" : "only failed or parked sagas can be retried",
          onclick: async () => {
            let body;
            try { body = retryBody(); } catch (e) { toast(`Retry: ${e.message}`, true); return; }
            if (await act("Retry", "POST", path + "/retry", body) && body) mapping.value = "";
          } }, parked ? "Retry with the current definition" : "Retry"),
        actionButton({ id: "act-cancel", class: "danger", disabled: !canCancel, title: canCancel ? undefined : "only pending, executing or parked sagas can be cancelled",
          onclick: () => { if (confirm(`Cancel ${id}? Its completed steps are compensated.`)) act("Cancel", "POST", path + "/cancel"); } }, "Cancel"));
      const facts = h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", { id: "saga-status", "data-status": s.status }, badge(s.status)),
        h("dt", {}, "Saga"), h("dd", {}, s.saga),
        h("dt", {}, "Trigger"), h("dd", {}, s.trigger),
        h("dt", {}, "Source"), h("dd", {}, `${s.source.topic} partition ${s.source.partition} offset ${s.source.offset}`),
        h("dt", {}, "Idempotency key"), h("dd", {}, s.idempotency_key || "— (the event's position)"),
        h("dt", {}, "Event time"), h("dd", {}, fmtTime(s.event_time)),
        h("dt", {}, "Created"), h("dd", {}, fmtTime(s.created_at)),
        h("dt", {}, "Updated"), h("dd", {}, fmtTime(s.updated_at), ` (version ${s.version})`),
        h("dt", {}, "Runs on"), h("dd", { id: "saga-runs-on" }, s.answered_by ? `member ${s.answered_by} (it answered through this one)`
          : s.owned_here ? "this member" : `another member${s.owner ? ": " + s.owner : ""} — this copy may be behind`),
        s.error ? [h("dt", {}, "Error"), h("dd", { class: "err" }, s.error)] : null,
        s.parked ? [h("dt", {}, "Parked"), h("dd", { id: "saga-parked", class: "err" },
          `since ${fmtTime(s.parked.since)} (was ${s.parked.from.replace("_", " ")}): ${s.parked.reason}. It resumes where a member declaring its definition owns its partition; or retry it with the current definition, or cancel it.`)] : null,
        s.definition ? [h("dt", {}, "Definition"), h("dd", { class: "id" }, s.definition)] : null,
        s.waiting ? [h("dt", {}, "Waiting"), h("dd", { id: "saga-waiting", "data-kind": s.waiting.kind },
          `for ${s.waiting.for}, since ${fmtTime(s.waiting.since)}`,
          s.waiting.deadline ? `, until ${fmtTime(s.waiting.deadline)}` : "")] : null);
      // Timeline: each step's action and compensation on one time scale.
      const times = s.steps.flatMap((st) => [st.started_at, st.ended_at, st.compensated_at]).filter(Boolean).map((x) => new Date(x).getTime());
      const t0 = times.length ? Math.min(...times) : 0;
      const t1 = times.length ? Math.max(...times, t0 + 1) : 1;
      const bar = (from, to) => {
        const b = h("div", { class: "bar", "aria-hidden": "true" });
        if (from) {
          const a = new Date(from).getTime(), z = to ? new Date(to).getTime() : Date.now();
          const span = h("span");
          span.style.left = `${((a - t0) / (t1 - t0)) * 100}%`;
          span.style.width = `${Math.max(0.5, ((Math.min(z, t1) - a) / (t1 - t0)) * 100)}%`;
          b.append(span);
        }
        return b;
      };
      const timeline = h("ol", { class: "timeline", id: "timeline" }, s.steps.map((st, i) => {
        const dur = st.started_at && st.ended_at ? fmtDur(new Date(st.ended_at) - new Date(st.started_at)) : "";
        const waits = s.waiting && s.waiting.step === st.name;
        return h("li", { class: `st-${st.status}`, "data-step": st.name },
          h("div", { class: "step-head" }, h("span", { class: "step-name" }, `${i + 1}. ${st.name}`), badge(st.status),
            waits ? h("span", { class: "badge st-waiting", title: s.waiting.for }, `waiting: ${s.waiting.kind}`) : null,
            h("span", { class: "muted" }, `${st.attempts} attempt${st.attempts === 1 ? "" : "s"}`),
            st.started_at ? h("span", { class: "muted" }, `started ${fmtTime(st.started_at)}`) : h("span", { class: "muted" }, "not started"),
            dur ? h("span", { class: "muted" }, `took ${dur}`) : null),
          bar(st.started_at, st.ended_at),
          st.error ? h("div", { class: "err" }, `Error: ${st.error}`) : null,
          st.compensation_attempts || st.compensated_at || st.compensation_error ? h("div", { class: "comp" },
            h("span", {}, `Compensation: ${st.compensation_attempts || 0} attempt${st.compensation_attempts === 1 ? "" : "s"}`),
            st.compensated_at ? h("span", { class: "muted" }, ` — done ${fmtTime(st.compensated_at)}`) : null,
            st.compensation_error ? h("div", { class: "err" }, `Error: ${st.compensation_error}`) : null) : null);
      }));
      data.replaceChildren(...kids(readOnlyNote(), actions, facts, h("h2", {}, "Steps"), timeline, h("h2", {}, "Context"),
        h("p", { class: "note" }, "Fields the saga declares sensitive are shown as ***."),
        h("pre", { id: "saga-context" }, s.context === undefined ? "(none)" : JSON.stringify(s.context, null, 2)),
        historyTable(s.history)));
    },
  };
}

// ---------- triggers and schedules ----------

function pageSchedules() {
  const data = h("div", { id: "schedules" });
  main.replaceChildren(h("h1", {}, "Triggers & schedules"), data);
  return {
    async refresh() {
      const tr = await api("GET", "/api/triggers");
      let sched = null, schedErr = "";
      try { sched = await api("GET", "/api/schedules"); } catch (e) { if (e.status !== 404) throw e; schedErr = "No cron schedules in this binary."; }
      const triggers = table("Triggers compiled into this binary", ["Source", "Name", "Saga", "Steps", "Idempotency key", "Max concurrent"],
        tr.triggers.map((t) => h("tr", {}, h("td", {}, t.source), h("td", {}, t.name), h("td", {}, t.saga), h("td", { class: "num" }, t.steps),
          h("td", {}, t.idempotency_key), h("td", { class: "num" }, t.max_concurrent || "no limit"))), { id: "triggers-table" });
      const rows = sched ? sched.schedules.map((s) => {
        const p = "/api/schedules/" + encodeURIComponent(s.id);
        const st = s.state || {};
        return h("tr", { "data-id": s.id },
          h("td", { class: "id" }, s.id), h("td", {}, s.spec), h("td", {}, s.owned_here ? "here" : `partition ${s.partition}, another member`),
          h("td", { "data-paused": String(s.paused) }, s.paused ? "paused" : "active"), h("td", {}, s.paused ? "—" : fmtTime(s.next_fire)),
          h("td", {}, fmtTime(st.last_tick)), h("td", { class: "num" }, st.fired || 0),
          h("td", { class: "num" }, st.skipped || 0, st.recent_skipped && st.recent_skipped.length ? h("details", {}, h("summary", {}, "recent"),
            h("ul", {}, st.recent_skipped.map((x) => h("li", {}, fmtTime(x))))) : null),
          h("td", {}, s.owned_here ? h("div", { class: "actions" },
            s.paused ? actionButton({ "data-act": "resume", onclick: () => act(`Resume ${s.id}`, "POST", p + "/resume") }, "Resume")
              : actionButton({ "data-act": "pause", onclick: () => act(`Pause ${s.id}`, "POST", p + "/pause") }, "Pause"),
            actionButton({ "data-act": "trigger", onclick: () => act(`Trigger ${s.id}`, "POST", p + "/trigger") }, "Trigger now"))
            : h("span", { class: "muted" }, "act on the member that owns it")));
      }) : [];
      data.replaceChildren(...kids(readOnlyNote(), triggers, h("h2", {}, "Schedules"),
        sched ? table("Cron schedules (state is known on the member that owns each one)",
          ["Schedule", "Spec", "Owner", "State", "Next fire", "Last tick", "Fired", "Skipped", "Actions"], rows, { id: "schedules-table" })
          : h("p", {}, schedErr)));
    },
  };
}

// ---------- dead letters ----------

function pageDeadLetters(params) {
  const form = h("form", { class: "filters", id: "dl-filters", role: "search", "aria-label": "Filter dead letters" },
    h("label", {}, "Reason", h("select", { id: "f-reason" }, h("option", { value: "" }, "any"),
      REASONS.map((r) => h("option", { value: r, selected: r === params.get("reason") }, r)))),
    h("label", {}, "Original topic", h("input", { type: "search", id: "f-topic", value: params.get("topic") || "" })),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("button", { type: "button", onclick: () => go("/deadletters") }, "Clear"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    const r = document.getElementById("f-reason").value, t = document.getElementById("f-topic").value.trim();
    if (r) q.set("reason", r);
    if (t) q.set("topic", t);
    go("/deadletters", q);
  });
  const data = h("div", { id: "deadletters" });
  const results = h("div", { id: "replay-results", "aria-live": "polite" });
  const replaySelected = actionButton({ id: "replay-selected", class: "primary", onclick: () => {
    const coords = [...data.querySelectorAll("input[name=dl]:checked")].map((c) => {
      const [p, o] = c.value.split("/");
      return { partition: Number(p), offset: Number(o) };
    });
    if (coords.length) replay(coords);
    else toast("Select dead letters to replay first", true);
  } }, "Replay selected");
  async function replay(coords) {
    const out = await act(`Replay of ${coords.length} dead letter${coords.length === 1 ? "" : "s"}`, "POST", "/api/deadletters/replay", { dead_letters: coords });
    if (!out) return;
    results.replaceChildren(h("h2", {}, `Replayed ${out.replayed}, failed ${out.failed}`), h("ul", {}, out.results.map((r) =>
      h("li", { class: r.error ? "err" : "" }, `${r.partition}/${r.offset}: `, r.error ? r.error : `produced to ${r.topic} partition ${r.replay_partition} offset ${r.replay_offset}`))));
  }
  main.replaceChildren(...kids(h("h1", {}, "Dead letters"),
    h("p", { class: "note" }, "Records that could not start a saga, read from the dead-letter topic (newest first). A replay produces the record again to its original topic and partition with its key, value and headers, plus sagaz.replay.of; the dead letter stays. A trigger with an idempotency key starts at most one saga per key, so replaying twice is harmless there; without a key every replay starts a saga."),
    form, readOnlyNote(), h("div", { class: "actions" }, replaySelected), results, data));
  return {
    interval: 15000,
    async refresh(auto) {
      if (auto && data.querySelector("input[name=dl]:checked")) return; // do not lose a selection
      const q = new URLSearchParams();
      for (const f of ["reason", "topic", "cursor"]) if (params.get(f)) q.set(f, params.get(f));
      q.set("limit", "50");
      let out;
      try { out = await api("GET", "/api/deadletters?" + q); } catch (e) {
        if (e.status === 404) { data.replaceChildren(h("p", {}, "Dead letters are not served by this member.")); return; }
        throw e;
      }
      const rows = out.dead_letters.map((l) => h("tr", { "data-coord": `${l.partition}/${l.offset}`, "data-reason": l.reason },
        h("td", {}, h("input", { type: "checkbox", name: "dl", value: `${l.partition}/${l.offset}`, disabled: readOnly(), "aria-label": `select dead letter ${l.partition}/${l.offset}` })),
        h("td", {}, fmtTime(l.timestamp)), h("td", {}, h("span", { class: "badge s-failed" }, l.reason)),
        h("td", {}, `${l.original.topic}/${l.original.partition}@${l.original.offset}`), h("td", {}, l.saga || "—"),
        h("td", { class: "err" }, l.error || ""), h("td", { class: "preview" }, l.key),
        h("td", {}, h("details", {}, h("summary", {}, `value (${l.value_bytes} bytes)`),
          h("div", { class: "preview" }, l.value_dropped ? "(the value was too large for the dead-letter topic and was left out)" : l.value, l.value_truncated ? " …" : ""),
          l.headers.length ? h("dl", { class: "facts" }, l.headers.map((x) => [h("dt", {}, x.key), h("dd", {}, x.value)])) : h("p", { class: "muted" }, "no headers of its own"))),
        h("td", {}, actionButton({ "data-act": "replay", onclick: () => replay([{ partition: l.partition, offset: l.offset }]) }, "Replay"))));
      const next = new URLSearchParams(params);
      next.set("cursor", out.next_cursor || "");
      const first = new URLSearchParams(params);
      first.delete("cursor");
      data.replaceChildren(
        out.dead_letters.length ? table(`Topic ${out.topic}`, ["", "Time", "Reason", "Original", "Saga", "Error", "Key", "Value and headers", ""], rows, { id: "dl-table" })
          : h("p", { id: "no-dead-letters" }, out.next_cursor ? `Nothing matched in the ${out.scanned} records read; go on to older ones.` : "No dead letters match."),
        h("div", { class: "pager" },
          params.get("cursor") ? h("button", { type: "button", onclick: () => go("/deadletters", first) }, "Newest") : null,
          out.next_cursor ? h("button", { type: "button", id: "dl-next", onclick: () => go("/deadletters", next) }, "Older") : null,
          h("span", { class: "muted" }, `${out.dead_letters.length} shown, ${out.scanned} records read`)));
    },
  };
}

// ---------- router and live updates ----------

function setLive(text) {
  document.getElementById("live").textContent = text;
}

async function refreshNow(auto) {
  if (!page) return;
  const p = page;
  try {
    await p.refresh(auto);
    if (p === page) setLive(`Updated ${new Date().toLocaleTimeString()} · refreshes every ${(p.interval || INTERVAL) / 1000} s while this tab is visible`);
  } catch (e) {
    if (e.name === "AbortError" || e.sessionLost) return; // another page, or the login form, took over
    if (p === page) setLive(`Could not refresh: ${e.message}`);
  }
}

function schedule() {
  clearTimeout(timer);
  if (!page) return;
  timer = setTimeout(async () => {
    if (!document.hidden) await refreshNow(true);
    schedule();
  }, page.interval || INTERVAL);
}

function route() {
  ctl.abort();
  ctl = new AbortController();
  clearTimeout(timer);
  const { path, params } = hashParams();
  const section = path.startsWith("/saga/") || path === "/sagas" ? "sagas" : path === "/schedules" ? "schedules"
    : path === "/deadletters" ? "deadletters" : path === "/" ? "overview" : "";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (path === "/login" || needsLogin()) {
    // The login form, in place of the page asked for: no requests, no refresh.
    page = null;
    pageLogin(params, path === "/login", section);
    document.title = "Log in · Sagaz";
    setLive(session && session.token_required ? "Log in to read this member's data" : "");
    return;
  }
  if (path.startsWith("/saga/")) page = pageSaga(decodeURIComponent(path.slice(6)));
  else if (path === "/sagas") page = pageSagas(params);
  else if (path === "/schedules") page = pageSchedules();
  else if (path === "/deadletters") page = pageDeadLetters(params);
  else page = pageOverview();
  document.title = `${main.querySelector("h1") ? main.querySelector("h1").textContent : "Console"} · Sagaz`;
  main.focus({ preventScroll: true });
  refreshNow().then(schedule);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) setLive("Paused while this tab is hidden");
  else refreshNow(true).then(schedule);
});
window.addEventListener("hashchange", route);
loadSession().then(route);
