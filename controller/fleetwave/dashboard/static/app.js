// The fleetwave dashboard: one small ES module, no framework, no build step.
// It reads the dashboard's bounded JSON pages and the API, listens to the
// server-sent event stream, and sends control operations to the API's own
// write endpoints with the token kept in sessionStorage.

const TOKEN_KEY = "fleetwave.token";
const PAGE = 50;
const GROUPS = [
  ["done", "done"], ["inFlight", "in flight"], ["failed", "failed"],
  ["unreachable", "unreachable"], ["parked", "parked"], ["waiting", "waiting"],
];
const UPDATE_STATES = ["pending", "acknowledged", "scheduled", "in_progress", "awaiting_restart",
  "succeeded",
  "failed", "timeout", "cancelled", "rolled_back", "upToDate", "waiting"];
const OPS = {
  pause: "Pause", resume: "Resume", promote: "Promote", abort: "Abort", rollback: "Roll back",
};
const OP_TEXT = {
  pause: "No new device gets a command until you resume.",
  resume: "The rollout continues where it stopped.",
  promote: "The next step is approved and starts now.",
  abort: "The rollout stops for good: open updates are cancelled.",
  rollback: "Every device this rollout updated goes back to its previous version.",
};

// ---- small DOM helpers --------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else if (key === "style") Object.assign(el.style, value); // CSSOM: allowed by the CSP
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return el;
}

function replace(region, ...content) {
  // Keep keyboard focus across a live redraw: refocus the element with the same key.
  const key = document.activeElement && region.contains(document.activeElement)
    ? document.activeElement.dataset.key : null;
  region.replaceChildren(...content.flat().filter((c) => c !== null && c !== undefined && c !== false));
  if (key) {
    const again = region.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

function enc(text) { return encodeURIComponent(text); }

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  let left = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  const parts = [];
  for (const [unit, size] of units) {
    if (left >= size || (unit === "s" && parts.length === 0)) {
      parts.push(`${Math.floor(left / size)}${unit}`);
      left %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

function when(iso) {
  if (!iso) return "–";
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : t.toISOString().replace(".000Z", "Z").replace("T", " ");
}

function time(iso) { return iso ? h("time", { datetime: iso }, when(iso)) : "–"; }

function phaseBadge(phase) {
  return h("span", { class: `phase phase-${(phase || "Pending").toLowerCase()}` }, phase || "Pending");
}

// ---- data ---------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new HttpError(response.status, body?.error?.message || `HTTP ${response.status}`);
  }
  return body;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function post(path, body) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body || {}) });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new HttpError(response.status, data?.error?.message || `HTTP ${response.status}`);
  }
  return data;
}

// ---- sign-in, confirmation, messages ----------------------------------------------------

function showSignedIn() {
  const signedIn = Boolean(token());
  document.getElementById("signin").hidden = signedIn;
  document.getElementById("signedin").hidden = !signedIn;
}

function setupSignIn() {
  document.getElementById("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    if (!input.value.trim()) return;
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    showSignedIn();
    say("Signed in. The token is kept in this tab's session storage only.");
    document.getElementById("signout").focus();
  });
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedIn();
    say("Signed out.");
    document.getElementById("token").focus();
  });
  showSignedIn();
}

function say(message, kind = "info") {
  const toast = document.getElementById("toast");
  toast.className = `toast toast-${kind}`;
  toast.textContent = message;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { toast.textContent = ""; toast.className = "toast"; }, 8000);
}

function confirmAction(title, text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const returnTo = document.activeElement;
  return new Promise((resolve) => {
    const ok = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    const done = (answer) => {
      ok.removeEventListener("click", yes);
      cancel.removeEventListener("click", no);
      dialog.removeEventListener("cancel", no);
      if (dialog.open) dialog.close();
      if (returnTo instanceof HTMLElement) returnTo.focus();
      resolve(answer);
    };
    const yes = () => done(true);
    const no = (event) => { if (event) event.preventDefault(); done(false); };
    ok.addEventListener("click", yes);
    cancel.addEventListener("click", no);
    dialog.addEventListener("cancel", no);
    dialog.showModal();
    cancel.focus();
  });
}

async function act(label, detail, path, body, outcome) {
  if (!(await confirmAction(`${label}?`, detail))) {
    outcome.textContent = "";
    return;
  }
  outcome.textContent = `${label}: sending…`;
  outcome.className = "outcome";
  try {
    await post(path, body);
    outcome.textContent = `${label}: done.`;
    say(`${label}: done.`);
    refreshSoon(0);
  } catch (error) {
    const prefix = error.status ? `refused (${error.status})` : "failed";
    outcome.textContent = `${label} ${prefix}: ${error.message}`;
    outcome.className = "outcome outcome-error";
    say(`${label} ${prefix}: ${error.message}`, "error");
  }
}

// ---- shared pieces ----------------------------------------------------------------------

function waveBar(wave, compact = false) {
  const total = wave.members || 0;
  const counts = wave.counts || {};
  const parts = GROUPS.filter(([key]) => counts[key]).map(([key, label]) => `${counts[key]} ${label}`);
  const text = `wave ${wave.step} (${wave.percent}%): ${parts.join(", ") || "no devices"} of ${total}`;
  const bar = h("div", {
    class: "bar", role: "progressbar", "aria-label": `Wave ${wave.step}`,
    "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": counts.done || 0,
    "aria-valuetext": text, title: text,
  });
  for (const [key] of GROUPS) {
    if (!counts[key] || !total) continue;
    bar.append(h("span", { class: `seg seg-${key}`, style: { width: `${(100 * counts[key]) / total}%` } }));
  }
  if (compact) {
    return h("div", { class: "mini" }, h("span", { class: "muted", "aria-hidden": "true" }, String(wave.step)), bar);
  }
  return h("div", { class: "wave" },
    h("div", { class: "wave-head" }, h("strong", {}, `Wave ${wave.step}`), ` ${wave.percent}%`,
      wave.pause ? ` · pause ${wave.pause}s` : "", h("span", { class: "muted" }, ` · ${total} devices`)),
    bar,
    h("div", { class: "wave-legend" }, GROUPS.filter(([key]) => counts[key]).map(([key, label]) =>
      h("span", { class: "legend" }, h("span", { class: `dot seg-${key}`, "aria-hidden": "true" }),
        `${counts[key]} ${label}`))));
}

function legend() {
  return h("p", { class: "legend-row", "aria-hidden": "true" }, GROUPS.map(([key, label]) =>
    h("span", { class: "legend" }, h("span", { class: `dot seg-${key}` }), label)));
}

function failureCell(r) {
  const over = r.failureRate > r.maxFailurePercent;
  return h("span", { class: over ? "over" : "" }, `${Number(r.failureRate).toFixed(1)}%`,
    h("span", { class: "muted" }, ` of ${r.maxFailurePercent}% budget`));
}

function sourceText(source) {
  if (!source) return "–";
  const rev = source.revision ? ` @ ${String(source.revision).slice(0, 10)}` : "";
  return `${source.kind || "?"}${rev}${source.path ? ` · ${source.path}` : ""}`;
}

function pager(page, onMove, label) {
  const { offset, limit, total } = page;
  const last = Math.min(total, offset + page.items.length);
  return h("nav", { class: "pager", "aria-label": `${label} pages` },
    h("button", {
      type: "button", "data-key": `${label}-prev`, disabled: offset <= 0,
      onclick: () => onMove(Math.max(0, offset - limit)),
    }, "‹ Previous"),
    h("span", {}, total ? `${offset + 1}–${last} of ${total}` : "none"),
    h("button", {
      type: "button", "data-key": `${label}-next`, disabled: offset + limit >= total,
      onclick: () => onMove(offset + limit),
    }, "Next ›"));
}

function table(caption, headers, rows, cls = "") {
  return h("table", { class: cls },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, headers.map((head) => h("th", { scope: "col" }, head)))),
    h("tbody", {}, rows));
}

function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message || String(error));
}

// ---- views --------------------------------------------------------------------------------

const view = { refresh: null };

async function rolloutsView(main) {
  let offset = 0;
  const region = h("div", { class: "region", "aria-live": "off" });
  replace(main, h("h1", {}, "Rollouts"), legend(), region);
  view.refresh = async () => {
    let page;
    try { page = await getJSON(`/dashboard/api/rollouts?offset=${offset}&limit=${PAGE}`); }
    catch (error) { replace(region, errorBox(error)); return; }
    const rows = page.items.map((r) => h("tr", { "data-rollout": r.name },
      h("th", { scope: "row" }, h("a", { href: `#/rollouts/${enc(r.name)}`, "data-key": `r-${r.name}` }, r.name),
        h("div", { class: "muted" }, `${r.component} → ${r.version}`)),
      h("td", { class: "phase-cell" }, phaseBadge(r.phase)),
      h("td", { class: "step" }, `${Math.min(r.currentStep + 1, r.waves.length)}/${r.waves.length}`),
      h("td", { class: "waves" }, r.waves.map((w) => waveBar(w, true)),
        h("div", { class: "muted" }, `${r.progress} done`)),
      h("td", {}, failureCell(r)),
      h("td", {}, sourceText(r.source)),
      h("td", { title: r.startedAt ? new Date(r.startedAt * 1000).toISOString() : "" }, ago(r.startedAt))));
    replace(region,
      page.total ? table("Rollouts", ["Rollout", "Phase", "Step", "Waves", "Failure rate", "Source", "Age"], rows, "rollouts")
        : h("p", {}, "No rollouts yet: commit a Rollout file to the source."),
      pager(page, (next) => { offset = next; view.refresh(); }, "Rollouts"));
  };
  await view.refresh();
}

function controls(name, outcome) {
  return h("div", { class: "controls", role: "group", "aria-label": "Control the rollout" },
    Object.entries(OPS).map(([op, label]) => h("button", {
      type: "button", "data-op": op, class: ["abort", "rollback"].includes(op) ? "danger" : "",
      onclick: () => act(`${label} ${name}`, OP_TEXT[op], `/api/v1/rollouts/${enc(name)}/${op}`, {}, outcome),
    }, label)),
    outcome);
}

function chart(data, budget) {
  const width = 640, height = 200, pad = { l: 40, r: 12, t: 12, b: 24 };
  const samples = data.samples || [];
  const marks = (data.marks || []).filter((m) => m.time);
  const times = [...samples.map((p) => p.time), ...marks.map((m) => m.time)];
  const latest = samples[samples.length - 1];
  const summary = latest
    ? `Progress ${latest.targeted ? Math.round((100 * latest.done) / latest.targeted) : 0}%, failure rate ${latest.failureRate.toFixed(1)}% against a ${budget}% budget, over ${samples.length} samples`
    : "No samples yet: the chart fills while this controller runs the rollout";
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": summary });
  svg.append(s("title", {}, summary));
  if (!times.length) return h("figure", {}, svg, h("figcaption", {}, summary));
  const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1);
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (pct) => height - pad.b - (Math.min(100, Math.max(0, pct)) / 100) * (height - pad.t - pad.b);
  for (const pct of [0, 25, 50, 75, 100]) {
    svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: y(pct), y2: y(pct), class: "grid" }),
      s("text", { x: pad.l - 6, y: y(pct) + 4, class: "axis", "text-anchor": "end" }, `${pct}%`));
  }
  svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: y(budget), y2: y(budget), class: "budget" },
    s("title", {}, `failure budget ${budget}%`)));
  for (const m of marks) {
    svg.append(s("line", { x1: x(m.time), x2: x(m.time), y1: pad.t, y2: height - pad.b, class: `mark mark-${m.reason}` },
      s("title", {}, `${m.reason}: ${m.message}`)));
  }
  const line = (value, cls) => {
    if (!samples.length) return;
    const points = samples.map((p) => `${x(p.time).toFixed(1)},${y(value(p)).toFixed(1)}`);
    if (points.length === 1) points.push(`${(width - pad.r).toFixed(1)},${points[0].split(",")[1]}`);
    svg.append(s("polyline", { points: points.join(" "), class: cls }));
  };
  line((p) => (p.targeted ? (100 * p.done) / p.targeted : 0), "line-progress");
  line((p) => p.failureRate, "line-failure");
  svg.append(s("text", { x: pad.l, y: height - 6, class: "axis" }, new Date(t0 * 1000).toISOString().slice(11, 19)),
    s("text", { x: width - pad.r, y: height - 6, class: "axis", "text-anchor": "end" }, new Date(t1 * 1000).toISOString().slice(11, 19)));
  return h("figure", {}, svg, h("figcaption", {},
    h("span", { class: "legend" }, h("span", { class: "dot line-progress-dot", "aria-hidden": "true" }), "progress (done of targeted)"),
    h("span", { class: "legend" }, h("span", { class: "dot line-failure-dot", "aria-hidden": "true" }), "failure rate"),
    h("span", { class: "legend" }, h("span", { class: "dot budget-dot", "aria-hidden": "true" }), `budget ${budget}%`),
    h("span", { class: "legend" }, h("span", { class: "dot mark-dot", "aria-hidden": "true" }), "steps and controls (hover for details)")));
}

function planTable(plan) {
  if (plan.error) return h("p", { class: "error" }, `The planner cannot evaluate its schedule: ${plan.error}`);
  const rows = plan.waves.map((w) => h("tr", {},
    h("th", { scope: "row" }, `Wave ${w.step}`), h("td", {}, `${w.percent}%`), h("td", {}, String(w.members)),
    h("td", {}, String(w.upToDate)), h("td", {}, time(w.readyAt)), h("td", {}, w.members ? time(w.earliestStart) : "–"),
    h("td", {}, w.members ? time(w.sendingDone) : "–"),
    h("td", {}, w.pauseAfterSeconds ? `${w.pauseAfterSeconds}s` : "–"),
    h("td", {}, w.awaitsApproval ? "waits for promote" : "")));
  return h("div", {},
    h("p", {}, `As of ${when(plan.now)}: ${plan.toUpdate} of ${plan.targeted} targeted devices still to update; the rollout can start ${plan.startsAt ? when(plan.startsAt) : "never (within a year)"}.`),
    table("What fleetwave plan would do next", ["Wave", "Percent", "To update", "Already there", "Step ready", "Earliest start", "Sending done", "Pause after", "Approval"], rows),
    plan.notes.length ? h("ul", {}, plan.notes.map((n) => h("li", {}, n))) : null,
    h("p", { class: "muted" }, `Earliest possible times: ${plan.assumptions.join("; ")}.`));
}

function deviceFilters(state, waves, apply) {
  const form = h("form", { class: "filters", "aria-label": "Filter devices" });
  const stateSelect = h("select", { id: "f-state", name: "state" },
    h("option", { value: "" }, "any"),
    GROUPS.map(([key, label]) => h("option", { value: key, selected: state.state === key }, label)),
    UPDATE_STATES.map((st) => h("option", { value: st, selected: state.state === st }, `state: ${st}`)));
  const waveSelect = h("select", { id: "f-wave", name: "wave" },
    h("option", { value: "" }, "any"),
    waves.map((w) => h("option", { value: String(w.step), selected: String(state.wave) === String(w.step) }, `wave ${w.step}`)));
  const labelInput = h("input", { id: "f-label", name: "label", value: state.label || "", placeholder: "region=eu" });
  form.append(
    h("label", { for: "f-state" }, "State"), stateSelect,
    h("label", { for: "f-wave" }, "Wave"), waveSelect,
    h("label", { for: "f-label" }, "Label"), labelInput,
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply({ state: stateSelect.value, wave: waveSelect.value, label: labelInput.value.trim() });
  });
  return form;
}

function deviceRow(name, d, outcome) {
  const actions = [];
  if (d.group === "parked") {
    actions.push(h("button", {
      type: "button", "data-key": `promote-${d.uuid}`,
      onclick: () => act(`Promote device ${d.uuid}`, "The device leaves the penalty box: its failures no longer count and it is tried again.",
        `/api/v1/rollouts/${enc(name)}/promote`, { device: d.uuid }, outcome),
    }, "Promote"));
  }
  if (d.updateId && ["done", "failed", "parked", "unreachable"].includes(d.group)) {
    actions.push(h("button", {
      type: "button", class: "danger", "data-key": `rollback-${d.uuid}`,
      onclick: () => act(`Roll back device ${d.uuid}`, "This device goes back to its previous version.",
        `/api/v1/rollouts/${enc(name)}/devices/${enc(d.uuid)}/rollback`, {}, outcome),
    }, "Roll back"));
  }
  return h("tr", {},
    h("th", { scope: "row" }, h("a", { href: `#/devices/${enc(d.uuid)}`, "data-key": `d-${d.uuid}` }, d.uuid)),
    h("td", {}, d.wave ? String(d.wave) : "past last"),
    h("td", {}, h("span", { class: `state state-${d.group}` }, d.state)),
    h("td", {}, d.attempt ? String(d.attempt) : "–"),
    h("td", {}, d.reported || "–"),
    h("td", {}, d.online === null ? "?" : d.online ? "online" : "offline"),
    h("td", {}, d.reason || ""),
    h("td", { class: "actions" }, actions));
}

function rolloutFacts(r) {
  return h("dl", { class: "facts" },
    h("dt", {}, "Phase"), h("dd", { id: "phase" }, phaseBadge(r.phase)),
    h("dt", {}, "Version"), h("dd", {}, `${r.component} → ${r.version}`),
    h("dt", {}, "Step"), h("dd", { id: "step" }, `${Math.min(r.currentStep + 1, r.waves.length)} of ${r.waves.length}`),
    h("dt", {}, "Done"), h("dd", {}, r.progress),
    h("dt", {}, "Failure rate"), h("dd", {}, failureCell(r)),
    h("dt", {}, "Source"), h("dd", {}, sourceText(r.source)),
    h("dt", {}, "Age"), h("dd", {}, ago(r.startedAt)),
    h("dt", {}, "Message"), h("dd", {}, r.message || "–"),
    r.conflicted ? [h("dt", {}, "Conflicted"), h("dd", {}, `${r.conflicted} devices (with ${r.conflictsWith.join(", ")})`)] : null);
}

function devicesLoader(name, filter, region, outcome) {
  const load = async () => {
    const q = new URLSearchParams({ offset: filter.offset, limit: PAGE });
    if (filter.state) q.set("state", filter.state);
    if (filter.wave) q.set("wave", filter.wave);
    if (filter.label) q.set("label", filter.label);
    try {
      const page = await getJSON(`/dashboard/api/rollouts/${enc(name)}/devices?${q}`);
      replace(region,
        page.total ? table(`Devices of ${name}`, ["Device", "Wave", "State", "Attempt", "Reports", "Online", "Reason", "Actions"],
          page.items.map((d) => deviceRow(name, d, outcome)), "devices") : h("p", {}, "No device matches."),
        pager(page, (next) => { filter.offset = next; load(); }, "Devices"));
    } catch (error) { replace(region, errorBox(error)); }
  };
  return load;
}

function eventsLoader(name, region) {
  let offset = 0;
  const load = async () => {
    try {
      const page = await getJSON(`/dashboard/api/rollouts/${enc(name)}/events?offset=${offset}&limit=${PAGE}`);
      replace(region,
        page.items.length ? h("ol", { class: "timeline" }, page.items.map((e) => h("li", { class: `ev ev-${(e.type || "").toLowerCase()}` },
          time(e.time), " ", h("strong", {}, e.reason), " ", e.message,
          e.device ? h("span", {}, " · ", h("a", { href: `#/devices/${enc(e.device)}` }, e.device)) : null,
          e.actor && e.actor !== "controller" ? h("span", { class: "muted" }, ` · by ${e.actor}`) : null)))
          : h("p", {}, "No events yet."),
        pager(page, (next) => { offset = next; load(); }, "Events"));
    } catch (error) { replace(region, errorBox(error)); }
  };
  return load;
}

async function rolloutView(main, name) {
  const filter = { state: "", wave: "", label: "", offset: 0 };
  const header = h("div", { class: "region" });
  const outcome = h("p", { class: "outcome", role: "status", "aria-live": "polite" });
  const waves = h("div", { class: "region waves-big" });
  const chartRegion = h("div", { class: "region" });
  const conditions = h("div", { class: "region" });
  const plan = h("div", { class: "region" });
  const filters = h("div", {});
  const devices = h("div", { class: "region" });
  const events = h("div", { class: "region" });
  replace(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Rollouts"), " / ", name),
    h("h1", {}, `Rollout ${name}`), header, controls(name, outcome),
    h("section", { "aria-labelledby": "h-waves" }, h("h2", { id: "h-waves" }, "Waves"), waves),
    h("section", { "aria-labelledby": "h-chart" }, h("h2", { id: "h-chart" }, "Progress and failure rate"), chartRegion),
    h("section", { "aria-labelledby": "h-cond" }, h("h2", { id: "h-cond" }, "Conditions"), conditions),
    h("section", { "aria-labelledby": "h-plan" }, h("h2", { id: "h-plan" }, "Next: earliest start per wave"), plan),
    h("section", { "aria-labelledby": "h-dev" }, h("h2", { id: "h-dev" }, "Devices"), filters, devices),
    h("section", { "aria-labelledby": "h-events" }, h("h2", { id: "h-events" }, "Events"), events));
  let filtersDrawn = false;
  const loadDevices = devicesLoader(name, filter, devices, outcome);
  const loadEvents = eventsLoader(name, events);
  view.refresh = async () => {
    let r;
    try { r = await getJSON(`/dashboard/api/rollouts/${enc(name)}`); }
    catch (error) { replace(header, errorBox(error)); return; }
    replace(header, rolloutFacts(r));
    replace(waves, legend(), r.waves.map((w) => waveBar(w)));
    replace(conditions, r.conditions.length ? table("Conditions", ["Type", "Status", "Reason", "Message", "Since"],
      r.conditions.map((c) => h("tr", {}, h("th", { scope: "row" }, c.type), h("td", {}, c.status),
        h("td", {}, c.reason), h("td", {}, c.message), h("td", {}, time(c.lastTransitionTime))))) : h("p", {}, "No conditions yet."));
    if (!filtersDrawn) {
      filtersDrawn = true;
      replace(filters, deviceFilters(filter, r.waves, (f) => { Object.assign(filter, f, { offset: 0 }); loadDevices(); }));
    }
    const [chartData, planData] = await Promise.all([
      getJSON(`/dashboard/api/rollouts/${enc(name)}/chart`).catch((e) => e),
      getJSON(`/dashboard/api/rollouts/${enc(name)}/plan`).catch((e) => e),
    ]);
    replace(chartRegion, chartData instanceof Error ? errorBox(chartData) : chart(chartData, r.maxFailurePercent));
    replace(plan, planData instanceof Error ? errorBox(planData) : planTable(planData));
    await Promise.all([loadDevices(), loadEvents()]);
  };
  await view.refresh();
}

async function deviceView(main, uuid) {
  const region = h("div", { class: "region" });
  replace(main, h("p", { class: "crumbs" }, h("a", { href: "#/fleet" }, "Fleet"), " / ", uuid),
    h("h1", {}, `Device ${uuid}`), region);
  view.refresh = async () => {
    let device, history;
    try {
      [device, history] = await Promise.all([
        getJSON(`/api/v1/devices/${enc(uuid)}`), getJSON(`/api/v1/devices/${enc(uuid)}/updates?limit=${PAGE}`)]);
    } catch (error) { replace(region, errorBox(error)); return; }
    const kv = (obj) => Object.keys(obj || {}).length
      ? h("ul", { class: "kv" }, Object.entries(obj).sort().map(([k, v]) => h("li", {}, h("code", {}, k), ": ", String(v))))
      : "–";
    const rows = history.items.map((u) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/rollouts/${enc(u.rollout)}` }, u.rollout)),
      h("td", {}, `${u.component} ${u.fromVersion || "?"} → ${u.toVersion}`),
      h("td", {}, u.action), h("td", {}, String(u.attempt)),
      h("td", {}, h("span", { class: `state state-${u.state}` }, u.state), u.health && u.health !== "unknown" ? ` (${u.health})` : ""),
      h("td", { class: "times" }, h("ul", {}, [["created", u.createdAt], ["sent", u.sentAt], ["acknowledged", u.acknowledgedAt],
        ["started", u.startedAt], ["completed", u.completedAt], ["rolled back", u.rolledBackAt]]
        .filter(([, t]) => t).map(([label, t]) => h("li", {}, `${label} `, time(t))))),
      h("td", {}, u.error || u.reason || "–"),
      h("td", {}, u.exitCode === null || u.exitCode === undefined ? "–" : String(u.exitCode))));
    replace(region,
      h("dl", { class: "facts" },
        h("dt", {}, "Name"), h("dd", {}, device.name || "–"),
        h("dt", {}, "Online"), h("dd", { id: "online" }, device.online === null ? "unknown" : device.online ? "online" : "offline"),
        h("dt", {}, "Last seen"), h("dd", {}, time(device.lastSeen)),
        h("dt", {}, "IP"), h("dd", {}, device.ip || "–"),
        h("dt", {}, "Deployment"), h("dd", {}, device.deploymentType || "–"),
        h("dt", {}, "Reports"), h("dd", {}, kv(device.versions)),
        h("dt", {}, "Labels"), h("dd", {}, kv(device.labels))),
      h("h2", { id: "h-history" }, "Update history"),
      rows.length ? table(`Update history of ${uuid}`, ["Rollout", "Version", "Action", "Attempt", "State", "Timestamps", "Error", "Exit code"], rows, "history")
        : h("p", {}, "No update yet."),
      history.items.length >= PAGE ? h("p", { class: "muted" }, `The newest ${PAGE} attempts.`) : null);
  };
  await view.refresh();
}

function versionChart(component, versions, total) {
  const rowH = 24, width = 560, labelW = 120;
  const max = Math.max(1, ...versions.map((v) => v.devices));
  const text = `${component}: ${versions.map((v) => `${v.version} on ${v.devices}`).join(", ")}`;
  const svg = s("svg", { viewBox: `0 0 ${width} ${versions.length * rowH + 4}`, class: "hbars", role: "img", "aria-label": text });
  versions.forEach((v, i) => {
    const w = ((width - labelW - 70) * v.devices) / max;
    svg.append(
      s("text", { x: labelW - 8, y: i * rowH + 17, "text-anchor": "end", class: "axis" }, v.version),
      s("rect", { x: labelW, y: i * rowH + 4, width: Math.max(1, w), height: rowH - 8, class: "hbar" },
        s("title", {}, `${v.version}: ${v.devices} devices`)),
      s("text", { x: labelW + w + 6, y: i * rowH + 17, class: "axis" },
        `${v.devices} (${total ? Math.round((100 * v.devices) / total) : 0}%)`));
  });
  return h("figure", {}, h("figcaption", {}, h("strong", {}, component)), svg);
}

async function fleetView(main) {
  const summary = h("div", { class: "region" });
  const list = h("div", { class: "region" });
  const filter = { q: "", label: "", online: "", offset: 0 };
  const q = h("input", { id: "d-q", type: "search", placeholder: "uuid or name" });
  const label = h("input", { id: "d-label", placeholder: "region=eu" });
  const online = h("select", { id: "d-online" }, h("option", { value: "" }, "any"),
    h("option", { value: "true" }, "online"), h("option", { value: "false" }, "offline"));
  const form = h("form", { class: "filters", "aria-label": "Filter devices" },
    h("label", { for: "d-q" }, "Search"), q, h("label", { for: "d-label" }, "Label"), label,
    h("label", { for: "d-online" }, "Online"), online, h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(filter, { q: q.value.trim(), label: label.value.trim(), online: online.value, offset: 0 });
    loadList();
  });
  replace(main, h("h1", {}, "Fleet"), summary,
    h("section", { "aria-labelledby": "h-devices" }, h("h2", { id: "h-devices" }, "Devices"), form, list));
  const loadList = async () => {
    const params = new URLSearchParams({ offset: filter.offset, limit: PAGE });
    for (const key of ["q", "label", "online"]) if (filter[key]) params.set(key, filter[key]);
    try {
      const page = await getJSON(`/dashboard/api/devices?${params}`);
      const rows = page.items.map((d) => h("tr", {},
        h("th", { scope: "row" }, h("a", { href: `#/devices/${enc(d.uuid)}`, "data-key": `d-${d.uuid}` }, d.uuid)),
        h("td", {}, d.name || "–"),
        h("td", {}, Object.entries(d.versions || {}).map(([c, v]) => `${c} ${v}`).join(", ") || "–"),
        h("td", {}, Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
        h("td", {}, d.online === null ? "?" : d.online ? "online" : "offline"),
        h("td", {}, time(d.lastSeen))));
      replace(list, page.total ? table("Devices", ["Device", "Name", "Versions", "Labels", "Online", "Last seen"], rows, "devices")
        : h("p", {}, "No device matches."), pager(page, (next) => { filter.offset = next; loadList(); }, "Devices"));
    } catch (error) { replace(list, errorBox(error)); }
  };
  view.refresh = async () => {
    try {
      const f = await getJSON("/dashboard/api/fleet");
      const on = f.online || {};
      replace(summary,
        h("p", { class: "big" }, h("strong", { id: "online-count" }, String(on.online || 0)), ` of ${f.devices} devices online`,
          on.offline ? ` · ${on.offline} offline` : "", on.unknown ? ` · ${on.unknown} unknown` : ""),
        h("div", { class: "bar", role: "progressbar", "aria-label": "Devices online", "aria-valuemin": 0, "aria-valuemax": f.devices,
          "aria-valuenow": on.online || 0 },
          h("span", { class: "seg seg-done", style: { width: `${f.devices ? (100 * (on.online || 0)) / f.devices : 0}%` } })),
        h("h2", {}, "Versions per component"),
        Object.keys(f.components).length ? Object.entries(f.components).map(([c, v]) => versionChart(c, v, f.devices))
          : h("p", {}, "No device has reported yet."));
    } catch (error) { replace(summary, errorBox(error)); }
    await loadList();
  };
  await view.refresh();
}

// ---- routing and live updates ----------------------------------------------------------------

async function route() {
  const main = document.getElementById("main");
  const path = decodeURIComponent(location.hash.replace(/^#/, "") || "/");
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = (link.dataset.nav === "fleet") === (parts[0] === "fleet" || parts[0] === "devices");
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  view.refresh = null;
  if (parts[0] === "rollouts" && parts[1]) {
    document.title = `${parts[1]} · fleetwave`;
    await rolloutView(main, parts.slice(1).join("/"));
  } else if (parts[0] === "devices" && parts[1]) {
    document.title = `${parts[1]} · fleetwave`;
    await deviceView(main, parts.slice(1).join("/"));
  } else if (parts[0] === "fleet") {
    document.title = "Fleet · fleetwave";
    await fleetView(main);
  } else {
    document.title = "Rollouts · fleetwave";
    await rolloutsView(main);
  }
}

let refreshTimer = null;
let lastRefresh = 0;
function refreshSoon(delay = 1000) {
  // At most one refetch a second, however many changes stream in.
  if (refreshTimer) return;
  const wait = Math.max(delay, lastRefresh + 1000 - Date.now(), 0);
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    lastRefresh = Date.now();
    if (view.refresh) await view.refresh();
  }, wait);
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/dashboard/api/stream");
  let instance = null;
  source.addEventListener("hello", (event) => {
    const hello = JSON.parse(event.data);
    live.textContent = "live";
    live.className = "live live-on";
    if (instance !== null) refreshSoon(0); // reconnected (maybe a restarted controller): refetch
    instance = hello.instance;
  });
  let trailing = null;
  const changed = () => {
    refreshSoon();
    // The server shares one fleet read for up to two seconds: once changes stop, one
    // more refetch shows the final state.
    clearTimeout(trailing);
    trailing = setTimeout(() => refreshSoon(0), 3000);
  };
  for (const kind of ["rollout", "event", "resync"]) source.addEventListener(kind, changed);
  source.addEventListener("error", () => {
    live.textContent = "reconnecting…";
    live.className = "live live-off";
  });
}

// Besides the stream: a refetch every few seconds while the tab is shown. It catches
// what sends no event (a device going offline) and answers the server gave from a
// fleet read that was being renewed at that moment.
const POLL_MS = 5000;
setInterval(() => { if (document.visibilityState === "visible") refreshSoon(0); }, POLL_MS);

setupSignIn();
window.addEventListener("hashchange", () => { route().then(() => document.getElementById("main").focus({ preventScroll: true })); });
route();
connect();
