// genzoo judge: the rating page. The server holds the state: the next unanswered trial,
// the progress; every answer is posted the moment it is given (a retry is harmless: the
// server keeps the first answer to a trial; a refusal, 4xx, is shown and not sent again).
"use strict";
(function () {
  const token = document.body.dataset.token;
  const api = "/api/" + encodeURIComponent(token);
  let trial = null, shownAt = 0, busy = false;

  function show(id, on) { document.getElementById(id).hidden = !on; }
  function buttons(on) { document.querySelectorAll("button").forEach(b => { b.disabled = !on; }); }
  function fail(message) {  // nothing more this page can do: said, the buttons stay off
    document.getElementById("error").textContent = message;
    document.body.dataset.failed = "1";
    buttons(false);
  }

  function render(state) {
    const pct = state.total ? (100 * state.done / state.total) : 100;
    document.getElementById("fill").style.width = pct + "%";
    document.getElementById("count").textContent = state.done + " of " + state.total + " answered";
    trial = state.trial;
    document.body.dataset.trial = trial ? String(trial.id) : "";
    document.body.dataset.mode = trial ? trial.mode : "done";
    show("single", trial && trial.mode === "single");
    show("pair", trial && trial.mode === "pair");
    show("done", !trial);
    if (!trial) { busy = false; return; }
    const src = i => "/img/" + encodeURIComponent(token) + "/" + i + ".png";
    const imgs = trial.mode === "single" ? ["img"] : ["left-img", "right-img"];
    let pending = imgs.length;
    buttons(false);
    imgs.forEach((id, k) => {
      const el = document.getElementById(id);
      let tries = 0;
      el.onload = () => { if (--pending === 0) { shownAt = performance.now(); buttons(true); busy = false;
        document.body.dataset.ready = String(trial.id); } };
      el.onerror = () => {  // a restarting server, a dropped connection: the same image again
        if (++tries > 30) { fail("An image did not load. Reload the page to go on."); return; }
        setTimeout(() => { el.src = src(trial.images[k]) + "?try=" + tries; }, 500);
      };
      el.src = src(trial.images[k]);
    });
  }

  class Refused extends Error {}

  async function call(path, body) {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(api + path, body ? {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify(body)} : {});
        if (r.status >= 400 && r.status < 500) {  // refused, not lost: sending it again cannot help
          let why = (await r.json().catch(() => ({}))).detail;
          if (Array.isArray(why)) why = why.map(d => [(d.loc || []).slice(1).join("."), d.msg].filter(Boolean).join(": ")).join("; ");
          throw new Refused("The server refused this (" + r.status + (typeof why === "string" ? ": " + why : "")
                            + "). Reload the page; if it happens again, ask for a new link.");
        }
        if (!r.ok) throw new Error("the server said " + r.status);
        document.getElementById("error").textContent = "";
        return await r.json();
      } catch (e) {  // a restarting server: keep the answer and try again
        if (e instanceof Refused) { document.getElementById("error").textContent = e.message; throw e; }
        document.getElementById("error").textContent = "Saving... (" + e.message + "), retrying";
        if (attempt > 30) throw e;
        await new Promise(res => setTimeout(res, 500));
      }
    }
  }

  async function give(value) {
    if (!trial || busy) return;
    const ok = trial.mode === "single" ? ["real", "generated"] : ["left", "right"];
    if (!ok.includes(value)) return;
    busy = true;
    buttons(false);
    const ms = Math.round(performance.now() - shownAt);
    let state;
    try {
      state = await call("/answer", {trial: trial.id, answer: value, ms: ms});
    } catch (e) {  // (a refusal is on the page already)
      if (!(e instanceof Refused)) fail("Not saved: the server does not answer. Reload the page to answer this image again.");
      return;
    }
    render(state);
  }

  document.querySelectorAll("button[data-answer]").forEach(b => b.addEventListener("click", () => give(b.dataset.answer)));
  document.addEventListener("keydown", e => {
    if (!trial || e.repeat || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    const single = {r: "real", g: "generated", arrowleft: "real", arrowright: "generated"};
    // pairs: 1 / 2 (R, "real" a moment before, would have answered "right")
    const pair = {"1": "left", "2": "right", arrowleft: "left", arrowright: "right"};
    const v = (trial.mode === "single" ? single : pair)[k];
    if (v) { e.preventDefault(); give(v); }
  });
  busy = true;
  call("/next").then(render, e => { if (!(e instanceof Refused)) fail("The server does not answer. Reload the page."); });
})();
