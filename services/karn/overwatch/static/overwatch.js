// Overwatch core: the API client, strict formatting, the hash router and the live connection (SSE with backoff).
// Views live in views.js. Everything is read-only: the page only ever sends GET requests to its own origin.
"use strict";

const Overwatch = (() => {
  // ------------------------------------------------------------------ formatting: missing is "—", never 0
  const MISSING = "—";

  function isNum(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  function fmt(v, digits = 2) {
    return isNum(v) ? v.toFixed(digits) : MISSING;
  }

  function fmtInt(v) {
    return isNum(v) ? Math.round(v).toLocaleString("en-US") : MISSING;
  }

  function fmtText(v) {
    return v === null || v === undefined || v === "" ? MISSING : String(v);
  }

  function fmtTime(seconds) {
    return isNum(seconds) ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : MISSING;
  }

  // ------------------------------------------------------------------ DOM helpers: data becomes text nodes, never parsed HTML
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child))
        : child);
    }
    return node;
  }

  // A table cell that keeps the raw value beside the text, so tests compare what is shown with what the API said.
  function cell(value, text, field) {
    const attrs = { "data-field": field };
    if (isNum(value)) attrs["data-value"] = String(value);
    return el("td", attrs, text);
  }

  function table(id, headers, rows) {
    return el("table", { id, class: "data" },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
  }

  function section(title, ...body) {
    return el("section", { class: "panel" }, el("h2", {}, title), ...body);
  }

  // ------------------------------------------------------------------ API (same origin, GET only)
  async function api(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  // ------------------------------------------------------------------ live connection
  const EVENT_KINDS = [
    "seed_germinated", "seed_stage_changed", "seed_gate_evaluated", "seed_fossilized", "seed_internal_level_changed",
    "seed_pruned", "epoch_completed", "shapley_computed", "governor_rollback", "mutation_refused",
    "ppo_update_completed", "policy_updated", "policy_load_failed", "episode_outcome", "run_started", "run_finished",
    "run_resumed", "episode_resumed",
  ];
  const BACKOFF_START_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const REFRESH_MIN_MS = 1000;
  // The store lags the bus (Karn writes what the stream already carried), so a refresh right after an event can
  // read the state before it: one more refresh once events settle, and a slow poll while the run is followed.
  const SETTLE_MS = 2000;
  const POLL_MS = 10000;

  const live = {
    source: null, runId: null, lastSeq: null, backoff: BACKOFF_START_MS, timer: null, events: 0, onEvent: null,
    settle: null, poll: null,
  };

  function setLive(state, text) {
    const badge = document.getElementById("live");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function stopLive() {
    if (live.source) live.source.close();
    if (live.timer) clearTimeout(live.timer);
    if (live.settle) clearTimeout(live.settle);
    if (live.poll) clearInterval(live.poll);
    Object.assign(live, {
      source: null, runId: null, lastSeq: null, backoff: BACKOFF_START_MS, timer: null, events: 0, settle: null,
      poll: null,
    });
    setLive("idle", "read-only");
  }

  // Follow a run's stream; `onEvent` is called at most once per REFRESH_MIN_MS, with the newest event.
  function followRun(runId, onEvent) {
    live.onEvent = onEvent;
    if (live.runId === runId) return; // already following: a re-render keeps the stream and its position
    stopLive();
    live.runId = runId;
    live.onEvent = onEvent;
    let pending = null, lastRefresh = 0, refreshTimer = null;
    const flush = () => {
      refreshTimer = null;
      lastRefresh = Date.now();
      const event = pending;
      pending = null;
      if (live.runId !== runId) return;
      live.onEvent(event);
      if (live.settle) clearTimeout(live.settle);
      live.settle = setTimeout(() => live.runId === runId && live.onEvent(null), SETTLE_MS);
    };
    live.poll = setInterval(() => live.runId === runId && live.onEvent(null), POLL_MS);
    const handle = (message) => {
      live.events += 1;
      let data = null;
      try { data = JSON.parse(message.data); } catch (_) { return; }
      if (data && Number.isInteger(data.seq)) live.lastSeq = data.seq;
      pending = data;
      const wait = Math.max(0, REFRESH_MIN_MS - (Date.now() - lastRefresh));
      if (!refreshTimer) refreshTimer = setTimeout(flush, wait);
      setLive("live", "live · " + live.events + " events");
    };
    const connect = () => {
      if (live.runId !== runId) return;
      const query = live.lastSeq !== null ? "?after=" + live.lastSeq : "";
      const source = new EventSource("/runs/" + encodeURIComponent(runId) + "/stream" + query);
      live.source = source;
      setLive("connecting", "connecting…");
      source.onopen = () => {
        live.backoff = BACKOFF_START_MS;
        setLive("live", "live · " + live.events + " events");
      };
      for (const kind of EVENT_KINDS) source.addEventListener(kind, handle);
      source.onerror = () => {
        source.close();
        if (live.runId !== runId) return;
        const delay = live.backoff;
        live.backoff = Math.min(live.backoff * 2, BACKOFF_MAX_MS);
        setLive("reconnecting", "reconnecting in " + Math.round(delay / 1000) + " s");
        live.timer = setTimeout(connect, delay);
      };
    };
    connect();
  }

  // ------------------------------------------------------------------ router
  const routes = [];

  function route(pattern, render) {
    routes.push({ pattern, render });
  }

  async function navigate() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const view = document.getElementById("view");
    for (const { pattern, render } of routes) {
      const match = hash.match(pattern);
      if (!match) continue;
      const args = match.slice(1).map(decodeURIComponent);
      const token = Symbol("render");
      view.dataset.loading = "true";
      navigate.current = token;
      try {
        const content = await render(...args);
        if (navigate.current !== token) return;
        view.replaceChildren(content);
      } catch (error) {
        if (navigate.current !== token) return;
        view.replaceChildren(el("p", { class: "error", id: "error" }, "Could not load: " + error.message));
      } finally {
        if (navigate.current === token) view.dataset.loading = "false";
      }
      return;
    }
    stopLive();
    view.replaceChildren(el("p", { class: "error", id: "error" }, "No such page: " + hash));
  }

  window.addEventListener("hashchange", navigate);
  window.addEventListener("DOMContentLoaded", navigate);

  return { MISSING, isNum, fmt, fmtInt, fmtText, fmtTime, el, cell, table, section, api, followRun, stopLive, route,
    navigate };
})();
