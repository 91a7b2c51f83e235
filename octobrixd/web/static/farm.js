// The farm overview: asks api/farm every few seconds while the page is visible (nothing while
// the tab is hidden or the tablet sleeps), and updates each printer's card in place, so a live
// stream keeps playing and pictures do not flicker.
"use strict";

const FARM_EVERY_MS = 3000;
const SNAPSHOT_EVERY_MS = 5000;

const cards = new Map(); // printer name -> {root, el: {...}, camera: {...} | null, lastJson}
let farmTimer = null;
let snapshotTimer = null;
let lastGood = null;
let printerNames = [];

function $(root, selector) {
  return root.querySelector(selector);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function show(node, visible) {
  if (node.hidden === visible) node.hidden = !visible;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const minutes = Math.round(seconds / 60);
  if (minutes < 1) return "less than a minute left";
  if (minutes < 60) return `${minutes} min left`;
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${String(minutes % 60).padStart(2, "0")} min left`;
}

function degrees(reading) {
  if (!reading || reading.actual === null) return "–";
  const actual = `${reading.actual.toFixed(1)} °C`;
  if (!reading.target) return `${actual} (off)`;
  return `${actual} / ${Math.round(reading.target)} °C`;
}

function newCard(printer) {
  const root = document.getElementById("card").content.firstElementChild.cloneNode(true);
  const el = {
    open: $(root, ".open"), badge: $(root, ".badge"), detail: $(root, ".detail"),
    camera: $(root, ".camera"), snapshot: $(root, ".snapshot"), nopicture: $(root, ".nopicture"),
    camname: $(root, ".camname"), live: $(root, ".live"),
    job: $(root, ".job"), file: $(root, ".file"), bar: $(root, ".bar"), percent: $(root, ".percent"),
    left: $(root, ".left"), temps: $(root, ".temps"), pending: $(root, ".pending"), remove: $(root, ".remove"),
  };
  root.dataset.name = printer.name;
  const card = { root, el, camera: null, lastJson: "" };
  el.live.addEventListener("click", () => toggleLive(card));
  el.remove.addEventListener("click", () => removePrinter(printer.name));
  el.snapshot.addEventListener("error", () => pictureMissing(card));
  el.snapshot.addEventListener("load", () => pictureShown(card));
  return card;
}

function pictureMissing(card) {
  card.el.snapshot.classList.add("broken");
  show(card.el.nopicture, true);
}

function pictureShown(card) {
  card.el.snapshot.classList.remove("broken");
  show(card.el.nopicture, false);
}

function toggleLive(card) {
  if (!card.camera) return;
  const live = card.el.live.getAttribute("aria-pressed") !== "true";
  setLive(card, live);
}

function setLive(card, live) {
  const { el } = card;
  el.live.setAttribute("aria-pressed", String(live));
  setText(el.live, live ? "Stop live" : "Watch live");
  card.root.classList.toggle("streaming", live);
  if (live) {
    el.snapshot.src = card.camera.stream;
  } else {
    // Leaving the stream's URL closes its connection: a stream nobody watches costs nothing.
    el.snapshot.src = `${card.camera.snapshot}?t=${Date.now()}`;
  }
}

function refreshSnapshot(card) {
  if (!card.camera || card.el.live.getAttribute("aria-pressed") === "true") return;
  // Load the next picture off-screen and swap it in once complete, so the card never blinks.
  const next = new Image();
  next.onload = () => {
    card.el.snapshot.src = next.src;
    pictureShown(card);
  };
  next.onerror = () => pictureMissing(card);
  next.src = `${card.camera.snapshot}?t=${Date.now()}`;
}

function renderCamera(card, printer) {
  const { el } = card;
  const camera = printer.camera;
  show(el.camera, Boolean(camera));
  if (!camera) {
    card.camera = null;
    return;
  }
  const changed = !card.camera || card.camera.snapshot !== camera.snapshot;
  card.camera = camera;
  el.snapshot.alt = `Camera ${camera.name} of printer ${printer.name}`;
  setText(el.camname, camera.state === "streaming" ? `Camera ${camera.name}` : `Camera ${camera.name}: ${camera.state}`);
  if (changed) setLive(card, false);
}

function renderTemps(card, temps) {
  const { el } = card;
  show(el.temps, Boolean(temps));
  if (!temps) return;
  const rows = [];
  temps.tools.forEach((tool, i) => {
    const label = temps.tools.length > 1 ? `Nozzle ${i + 1}` : "Nozzle";
    rows.push([label, degrees(tool)]);
  });
  if (temps.bed) rows.push(["Bed", degrees(temps.bed)]);
  const key = JSON.stringify(rows);
  if (el.temps.dataset.key === key) return;
  el.temps.dataset.key = key;
  el.temps.replaceChildren(...rows.flatMap(([label, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    return [dt, dd];
  }));
}

function renderCard(card, printer) {
  const json = JSON.stringify(printer);
  if (json === card.lastJson) return;
  card.lastJson = json;
  const { el, root } = card;
  root.dataset.state = printer.state;
  root.dataset.group = printer.group;
  el.open.href = printer.url;
  setText(el.open, printer.name);
  el.open.setAttribute("aria-label", `${printer.name}: open its OctoPrint`);
  setText(el.badge, printer.state_text);
  setText(el.detail, printer.detail || "");
  show(el.detail, Boolean(printer.detail));
  renderCamera(card, printer);

  const job = printer.job;
  const active = printer.state === "printing" || printer.state === "paused";
  show(el.job, Boolean(job));
  if (job) {
    setText(el.file, job.file);
    const hasProgress = active && job.progress !== null;
    show(el.bar, hasProgress);
    if (hasProgress) {
      el.bar.value = job.progress;
      el.bar.setAttribute("aria-label", `Progress of ${job.file}`);
    }
    setText(el.percent, hasProgress ? `${Math.floor(job.progress)} %` : "Selected, not printing");
    setText(el.left, active ? (duration(job.time_left) || "estimating the time left") : "");
  }
  renderTemps(card, printer.temperatures);
  setText(el.pending, printer.device === "removed"
    ? "Taken out of the config: its OctoPrint stops when this print ends."
    : "A settings change waits for this print to end, then its OctoPrint restarts by itself.");
  show(el.pending, Boolean(printer.restart_pending));
}

function render(farm) {
  const list = document.getElementById("cards");
  const seen = new Set();
  farm.printers.forEach((printer, index) => {
    let card = cards.get(printer.name);
    if (!card) {
      card = newCard(printer);
      cards.set(printer.name, card);
    }
    renderCard(card, printer);
    if (list.children[index] !== card.root) list.insertBefore(card.root, list.children[index] || null);
    seen.add(printer.name);
  });
  for (const [name, card] of cards) {
    if (!seen.has(name)) {
      card.root.remove();
      cards.delete(name);
    }
  }
  show(document.getElementById("empty"), farm.printers.length === 0);
  setText(document.getElementById("summary"), farm.printers.length ? farm.summary.text : "No printers");
  const problems = farm.problems || [];
  problem(problems.length ? problems.join(" ") : null);
}

function problem(text) {
  const node = document.getElementById("problem");
  setText(node, text || "");
  show(node, Boolean(text));
}

async function refreshFarm() {
  try {
    const response = await fetch("api/farm", { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      location.href = `login?next=${encodeURIComponent(location.pathname)}`;
      return;
    }
    if (!response.ok) throw new Error(`the farm computer answered ${response.status}`);
    const farm = await response.json();
    lastGood = new Date();
    printerNames = farm.printers.map((printer) => printer.name);
    render(farm);
    await refreshFound();
  } catch (error) {
    const since = lastGood ? ` Showing what it said at ${lastGood.toLocaleTimeString()}.` : "";
    problem(`Cannot reach the farm computer (${error.message}).${since}`);
  }
}

// --- Found devices: Add asks octobrixd (through the web service) to write the entry --------------

async function postEdit(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({ ok: false, error: `the farm computer answered ${response.status}` }));
  return answer.ok ? answer.message : `${answer.error}${answer.hint ? ` (${answer.hint})` : ""}`;
}

function foundResult(text) {
  const node = document.getElementById("found-result");
  setText(node, text || "");
  show(node, Boolean(text));
}

function foundFacts(item) {
  const maker = [item.vendor, item.product].filter(Boolean).join(" ") || item.label;
  if (item.usb_port === null) {
    // A capture card, CSI or loopback camera: no USB id, port or serial, only its V4L2 name.
    const driver = item.driver ? `, driver ${item.driver}` : "";
    return `${maker}${driver}, ${item.where}, now ${item.node}`;
  }
  return `${maker} (${item.vid_pid}), driver ${item.driver || "none"}, USB port ${item.usb_port}, `
    + `serial ${item.serial || "none"}, now ${item.node}`;
}

function foundNote(item) {
  if (item.cannot_bind) return `Cannot be added: ${item.cannot_bind}; ${item.cannot_bind_hint}.`;
  if (item.port_note) return `Bound by USB port, because ${item.why_port}: ${item.port_note}.`;
  // "bound by its V4L2 name ...": a sentence of its own here.
  return item.name_note ? `${item.name_note[0].toUpperCase()}${item.name_note.slice(1)}.` : "";
}

function newFoundItem(item) {
  const root = document.getElementById("found-item").content.firstElementChild.cloneNode(true);
  root.dataset.id = item.id;
  const camera = item.kind === "camera";
  setText($(root, ".what"), `${camera ? "Camera" : "Printer board"}: ${item.label}`);
  setText($(root, ".facts"), foundFacts(item));
  const note = foundNote(item);
  setText($(root, ".port-note"), note);
  show($(root, ".port-note"), Boolean(note));
  const name = $(root, ".name");
  name.value = item.proposed_name;
  setText($(root, ".port"), `port ${item.proposed_port}`);
  const select = $(root, ".printer");
  if (camera) {
    select.replaceChildren(new Option("no printer", ""), ...printerNames.map((n) => new Option(n, n)));
    show($(root, ".shown-by"), true);
  }
  const form = $(root, ".add");
  $(root, "button").disabled = Boolean(item.cannot_bind);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { device: item.id, name: name.value };
    if (camera && select.value) body.printer = select.value;
    foundResult(`Adding ${name.value}…`);
    const said = await postEdit("api/add", body);
    foundResult(said.startsWith("added") ? `Setting up ${name.value}: its card appears above. ${said}` : said);
  });
  return root;
}

function settingUpItem([name, kind]) {
  const item = document.createElement("li");
  item.className = "found-item setting-up";
  item.dataset.name = name;
  item.textContent = `${name}: setting up (writing its entry, preparing its ${kind === "camera" ? "stream" : "OctoPrint"})…`;
  return item;
}

async function refreshFound() {
  const response = await fetch("api/found", { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) return;
  const body = await response.json();
  const found = body.found || [];
  // Added, not applied yet: no card until octobrixd has set it up.
  const settingUp = Object.entries(body.setting_up || {}).filter(([name]) => !cards.has(name));
  const list = document.getElementById("found-list");
  const json = JSON.stringify([found, settingUp]);
  // Rebuilt only when the list changes, so a name being typed is not lost.
  if (json !== list.lastJson) {
    list.lastJson = json;
    list.replaceChildren(...settingUp.map(settingUpItem), ...found.map(newFoundItem));
  }
  show(document.getElementById("found"), found.length + settingUp.length > 0);
}

async function removePrinter(name) {
  const question = `Take ${name} out of the farm? Its OctoPrint stops; its settings, uploads and users are kept `
    + "(adding it again brings them back). A printer that is printing is not taken out.";
  if (!window.confirm(question)) return;
  const said = await postEdit("api/remove", { kind: "printer", name });
  problem(said.startsWith("took") ? null : said);
  refreshFarm();
}

function refreshSnapshots() {
  for (const card of cards.values()) refreshSnapshot(card);
}

function start() {
  stop();
  refreshFarm();
  farmTimer = setInterval(refreshFarm, FARM_EVERY_MS);
  snapshotTimer = setInterval(refreshSnapshots, SNAPSHOT_EVERY_MS);
}

function stop() {
  clearInterval(farmTimer);
  clearInterval(snapshotTimer);
  farmTimer = snapshotTimer = null;
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    start();
  } else {
    stop();
    // A hidden tab watches nothing: close the live streams too.
    for (const card of cards.values()) {
      if (card.camera && card.el.live.getAttribute("aria-pressed") === "true") setLive(card, false);
    }
  }
});

if (document.visibilityState === "visible") start();
