// Overwatch views: runs list, live run, env detail, experiments list and experiment report.
"use strict";

(() => {
  const O = Overwatch;
  const C = window.OverwatchCharts;
  const { el, cell, fmt, fmtInt, fmtText, fmtTime, table, section, api } = O;
  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ runs list
  O.route(/^\/$/, async () => {
    O.stopLive();
    const runs = await api("/runs");
    if (!runs.length) return section("Runs", el("p", { class: "muted", id: "no-runs" }, "No runs in this store yet."));
    const rows = runs.slice().reverse().map((r) =>
      el("tr", { "data-run": r.run_id },
        el("td", { "data-field": "run_id" }, el("a", { href: "#/runs/" + enc(r.run_id), class: "run-link" }, r.run_id)),
        cell(null, fmtText(r.task), "task"),
        cell(null, fmtText(r.state), "state"),
        cell(r.n_envs, fmtInt(r.n_envs), "n_envs"),
        cell(r.episodes_done, `${fmtInt(r.episodes_done)} / ${fmtInt(r.episodes)}`, "episodes_done"),
        cell(r.best_accuracy, fmt(r.best_accuracy), "best_accuracy"),
        cell(r.mean_final_accuracy, fmt(r.mean_final_accuracy), "mean_final_accuracy"),
        cell(null, fmtText(r.policy_id), "policy_id"),
        cell(r.started_at, fmtTime(r.started_at), "started_at")));
    return section("Runs",
      table("runs", ["run", "task", "state", "envs", "episodes", "best acc %", "mean final acc %", "policy",
        "started"], rows));
  });

  // ------------------------------------------------------------------ live run
  function slotText(value) {
    return value ? String(value) : "empty";
  }

  function envTable(runId, status, envs) {
    const slots = status.slot_ids || [];
    const rows = envs.map((e) =>
      el("tr", { "data-env": e.env_id },
        el("td", { "data-field": "env_id" },
          el("a", { href: `#/runs/${enc(runId)}/envs/${e.env_id}`, class: "env-link" }, "env " + e.env_id)),
        cell(e.episode, fmtInt(e.episode), "episode"),
        cell(e.epoch, `${fmtInt(e.epoch)} / ${fmtInt(status.episode_length)}`, "epoch"),
        cell(e.val_accuracy, fmt(e.val_accuracy), "val_accuracy"),
        cell(e.best_accuracy, fmt(e.best_accuracy), "best_accuracy"),
        cell(e.val_loss, fmt(e.val_loss, 4), "val_loss"),
        ...slots.map((s) => cell(null, slotText((e.slots || {})[s]), "slot:" + s)),
        cell(null, e.op ? `${e.op}${e.target_slot ? "@" + e.target_slot : ""}` : O.MISSING, "last_action"),
        cell(e.episodes_done, fmtInt(e.episodes_done), "episodes_done")));
    return table("envs", ["env", "episode", "epoch", "val acc %", "best %", "val loss", ...slots, "last action",
      "episodes done"], rows);
  }

  function curves(status, epochs, episodes) {
    const length = status.episode_length || 1;
    const accuracy = C.lineChart([{ name: "committed mean val accuracy",
      points: epochs.map((e) => [e.round * length + e.epoch, e.val_accuracy]) }],
    { xLabel: "epoch (over rounds)", yLabel: "val accuracy (%)", id: "accuracy-chart", integerX: true });
    const byEpisode = episodes.slice().sort((a, b) => a.episode - b.episode || a.env_id - b.env_id);
    const reward = C.lineChart([{ name: "episode return", points: byEpisode.map((e) => [e.episode, e.episode_return]) }],
      { xLabel: "episode", yLabel: "return", id: "reward-chart", integerX: true });
    return el("div", { class: "grid2" },
      section("Accuracy", accuracy, C.legend(["committed mean val accuracy (every env of the round reported)"])),
      section("Reward", reward, C.legend(["episode return, under the run's reward mode"])));
  }

  // One lane per slot; each seed is its stage segments, from the lifecycle events (GERMINATED → … → FOSSILIZED).
  function swimlanes(status, lifecycle) {
    const slots = status.slot_ids || [];
    const max = status.episode_length || 1;
    const blocks = Object.values(lifecycle).map((env) => {
      const lanes = slots.map((slot) => ({
        lane: slot,
        bars: env.seeds.filter((s) => s.slot_id === slot).flatMap((s) =>
          s.segments.map((seg, i) => ({ from: seg.from, to: seg.to, stage: seg.stage, label: i === 0 ? s.blueprint : "" }))),
      }));
      return el("div", { class: "lane-block", "data-env": env.env_id },
        el("h3", {}, `env ${env.env_id} · episode ${fmtInt(env.episode)}`),
        C.swimlane(lanes, max, { id: "swimlane-" + env.env_id }));
    });
    return section("Seed lifecycle (latest episode per env)", C.stageLegend(), ...blocks);
  }

  function policyPanel(policies) {
    if (!policies.length) return section("Policy", el("p", { class: "muted" }, "No policy versions yet."));
    const blocks = policies.map((p) => {
      const versions = p.versions || [];
      const rows = versions.slice(-10).reverse().map((v) =>
        el("tr", { "data-version": v.version },
          cell(v.version, fmtInt(v.version), "version"),
          cell(v.policy_loss, fmt(v.policy_loss, 4), "policy_loss"),
          cell(v.value_loss, fmt(v.value_loss, 4), "value_loss"),
          cell(v.entropy, fmt(v.entropy, 3), "entropy"),
          cell(v.approx_kl, fmt(v.approx_kl, 4), "approx_kl"),
          cell(v.clip_fraction, fmt(v.clip_fraction, 3), "clip_fraction"),
          cell(v.explained_variance, fmt(v.explained_variance, 3), "explained_variance"),
          cell(null, v.skipped ? "skipped" : "", "skipped")));
      const chart = versions.length
        ? C.lineChart([
          { name: "entropy", points: versions.map((v) => [v.version, v.entropy]) },
          { name: "approx KL × 10", points: versions.map((v) => [v.version, O.isNum(v.approx_kl) ? v.approx_kl * 10 : null]) },
        ], { xLabel: "version", yLabel: "value", height: 180, integerX: true })
        : el("p", { class: "muted" }, "no PPO update: a fixed policy, or waiting for the first update");
      return el("div", { class: "policy", "data-policy": p.policy_id },
        el("h3", {}, `${p.policy_id} · latest v${fmtText(p.latest_version)} · ${fmtInt(p.steps)} steps`),
        versions.length ? table("versions-" + p.policy_id, ["version", "Lp", "Lv", "entropy", "KL", "clip", "EV", ""],
          rows) : null,
        chart, versions.length ? C.legend(["entropy", "approx KL × 10"]) : null);
    });
    return section("Policy versions and PPO diagnostics", ...blocks);
  }

  async function renderRun(runId) {
    const base = "/runs/" + enc(runId);
    const [status, envs, epochs, episodes, lifecycle, policies] = await Promise.all([
      api(base), api(base + "/envs"), api(base + "/epochs"), api(base + "/episodes"), api(base + "/lifecycle"),
      api(base + "/policies"),
    ]);
    if (status.state === "running") O.followRun(runId, () => O.navigate());
    else O.stopLive();
    const facts = [
      ["task", fmtText(status.task)], ["state", fmtText(status.state)], ["policy", fmtText(status.policy_id)],
      ["reward mode", fmtText(status.reward_mode)],
      ["episodes", `${fmtInt(status.episodes_done)} / ${fmtInt(status.episodes)}`], ["steps", fmtInt(status.steps)],
      ["best acc %", fmt(status.best_accuracy)], ["mean final acc %", fmt(status.mean_final_accuracy)],
      ["started", fmtTime(status.started_at)],
    ];
    return el("div", { id: "run", "data-run": runId },
      el("h1", {}, runId),
      el("dl", { class: "facts", id: "run-facts" },
        facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, v)])),
      status.message ? el("p", { class: "muted" }, status.message) : null,
      section("Envs", envs.length ? envTable(runId, status, envs) : el("p", { class: "muted" }, "No epoch yet.")),
      curves(status, epochs, episodes),
      swimlanes(status, lifecycle),
      policyPanel(policies));
  }

  O.route(/^\/runs\/([^/]+)$/, renderRun);

  // ------------------------------------------------------------------ env detail
  function interactionMatrix(seeds, interactions) {
    const slots = seeds.map((s) => s.slot_id);
    const value = new Map(interactions.map((i) => [i.slot_a + "|" + i.slot_b, i.interaction]));
    const lookup = (a, b) => (value.has(a + "|" + b) ? value.get(a + "|" + b) : value.get(b + "|" + a));
    const rows = slots.map((a) => el("tr", {}, el("th", {}, a), slots.map((b) => {
      const v = a === b ? null : lookup(a, b);
      return cell(v, a === b ? "·" : fmt(v), `interaction:${a}:${b}`);
    })));
    return table("interactions", ["", ...slots], rows);
  }

  O.route(/^\/runs\/([^/]+)\/envs\/(\d+)$/, async (runId, envId) => {
    const [status, detail] = await Promise.all([api("/runs/" + enc(runId)), api(`/runs/${enc(runId)}/envs/${envId}`)]);
    if (status.state === "running") O.followRun(runId, () => O.navigate());
    else O.stopLive();
    const seedRows = detail.seeds.map((s) =>
      el("tr", { "data-slot": s.slot_id },
        cell(null, s.slot_id, "slot_id"), cell(null, fmtText(s.stage), "stage"),
        cell(null, fmtText(s.blueprint), "blueprint"), cell(s.alpha, fmt(s.alpha, 3), "alpha"),
        cell(s.contribution, fmt(s.contribution), "contribution"),
        cell(s.solo_on_accuracy, fmt(s.solo_on_accuracy), "solo_on_accuracy"),
        cell(s.params, fmtInt(s.params), "params")));
    const shapley = detail.shapley;
    return el("div", { id: "env-detail", "data-env": detail.env_id },
      el("p", {}, el("a", { href: "#/runs/" + enc(runId) }, "← " + runId)),
      el("h1", {}, `env ${detail.env_id} · episode ${fmtInt(detail.episode)} · epoch ${fmtInt(detail.epoch)}`),
      el("dl", { class: "facts" },
        el("dt", {}, "accuracy %"), el("dd", { "data-fact": "accuracy" }, fmt(detail.accuracy)),
        el("dt", {}, "all seeds off %"), el("dd", { "data-fact": "all_off_accuracy" }, fmt(detail.all_off_accuracy)),
        el("dt", {}, "policy"), el("dd", {}, `${fmtText(detail.policy_id)} v${fmtText(detail.policy_version)}`)),
      section("Counterfactual waterfall",
        detail.waterfall.length ? C.waterfallChart(detail.waterfall)
          : el("p", { class: "muted", id: "no-waterfall" }, "No counterfactual was measured this epoch."),
        el("p", { class: "muted" }, "Each seed bar is its leave-one-out contribution (pp); the remainder is what " +
          "interactions and nonlinearity add on top.")),
      section("Seeds", table("seeds", ["slot", "stage", "blueprint", "α", "contribution pp", "solo-on acc %", "params"],
        seedRows)),
      section("Interaction matrix (pp)", detail.interactions.length ? interactionMatrix(detail.seeds,
        detail.interactions) : el("p", { class: "muted", id: "no-interactions" }, "No pair was measured this epoch.")),
      section("Shapley (terminal)", shapley
        ? el("div", {},
          el("p", { class: "muted" }, `episode ${fmtInt(shapley.episode)}, ${fmtText(shapley.strategy)}`),
          table("shapley", ["slot", "value pp", "± std"], shapley.values.map((v) =>
            el("tr", { "data-slot": v.slot_id }, cell(null, v.slot_id, "slot_id"), cell(v.value, fmt(v.value), "value"),
              cell(v.std, fmt(v.std), "std")))))
        : el("p", { class: "muted", id: "no-shapley" }, "No episode of this env has ended with a Shapley estimate.")));
  });

  // ------------------------------------------------------------------ experiments
  O.route(/^\/experiments$/, async () => {
    O.stopLive();
    const reports = await api("/experiments");
    if (!reports.length) {
      return section("Experiments", el("p", { class: "muted", id: "no-reports" },
        "No experiment reports (start `esper karn serve --reports DIR`)."));
    }
    return section("Experiments", table("reports", ["report", "kind", "verdict"], reports.map((r) =>
      el("tr", { "data-report": r.name },
        el("td", {}, el("a", { href: "#/experiments/" + enc(r.name), class: "report-link" }, r.title)),
        cell(null, r.kind, "kind"), cell(null, fmtText(r.verdict), "verdict")))));
  });

  function interval(x) {
    return x && typeof x === "object" ? `${fmt(x.mean)} [${fmt(x.low)}, ${fmt(x.high)}]` : fmt(x);
  }

  O.route(/^\/experiments\/([^/]+)$/, async (name) => {
    O.stopLive();
    const r = await api("/experiments/" + enc(name));
    const cohortRows = r.cohorts.map((c) =>
      el("tr", { "data-cohort": c.cohort },
        cell(null, c.cohort, "cohort"), cell(c.pairs, fmtInt(c.pairs), "pairs"),
        cell(c.final_accuracy ? c.final_accuracy.mean : null, interval(c.final_accuracy), "final_accuracy"),
        cell(c.delta_vs_static_initial ? c.delta_vs_static_initial.mean : null, interval(c.delta_vs_static_initial),
          "delta_vs_static_initial"),
        cell(c.seed_params_added, fmt(c.seed_params_added, 1), "seed_params_added"),
        cell(c.train_gflops, fmt(c.train_gflops, 3), "train_gflops"),
        cell(c.rollbacks, fmtInt(c.rollbacks), "rollbacks")));
    const comparisons = r.comparisons.map((c) =>
      el("tr", { "data-comparison": c.id }, cell(null, c.id, "id"), cell(null, fmtText(c.comparison), "comparison"),
        cell(c.estimate, fmt(c.estimate), "estimate"), cell(null, `[${fmt(c.low)}, ${fmt(c.high)}]`, "interval"),
        cell(null, fmtText(c.status), "status")));
    const checks = r.checks.map((c) => el("tr", {}, cell(null, c.id, "id"), cell(null, fmtText(c.status), "status")));
    const curves = r.flops_curves;
    const names = curves ? Object.keys(curves) : [];
    return el("div", { id: "report", "data-report": r.name },
      el("p", {}, el("a", { href: "#/experiments" }, "← experiments")),
      el("h1", {}, r.title),
      el("p", {}, "verdict: ", el("strong", { id: "report-verdict" }, fmtText(r.verdict))),
      r.cohorts.length ? section("Cohorts (mean [95% CI] over paired episodes)", table("cohorts",
        ["cohort", "pairs", "final acc %", "Δ vs static-initial pp", "seed params", "train GFLOPs", "rollbacks"],
        cohortRows)) : null,
      comparisons.length ? section("Pre-registered comparisons", table("comparisons",
        ["id", "comparison", "estimate pp", "interval", "status"], comparisons)) : null,
      checks.length ? section("Checks", table("checks", ["check", "status"], checks)) : null,
      curves ? section("Accuracy against training FLOPs",
        C.lineChart(names.map((n) => ({ name: n, points: curves[n].map((p) => [p.cumulative_gflops, p.accuracy]) })),
          { xLabel: "cumulative training GFLOPs (mean over episodes)", yLabel: "val accuracy (%)", id: "flops-chart",
            height: 300 }),
        C.legend(names)) : null,
      r.settings ? section("Settings", el("pre", { id: "settings" }, JSON.stringify(r.settings, null, 2))) : null);
  });
})();
