// The search page: builds a SearchRequest (canonical JSON, or multipart with an image file), posts it to
// /v1/search and shows the results as a grid. Thumbnails and media come from /v1/items/{id}/thumbnail and
// /media, fetched with the API key when one is set. Every error is shown as the service's message.
"use strict";

const $ = (id) => document.getElementById(id);
// `searches` counts finished searches (answered or failed), in #status's data-searches: a test waits on it.
const state = { file: null, objectUrls: [], searches: 0 };

function apiKey() {
  return $("api-key").value.trim();
}

function headers(extra) {
  const out = Object.assign({}, extra || {});
  if (apiKey()) out["Authorization"] = "Bearer " + apiKey();
  return out;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// The service answers errors as google.rpc.Status JSON; anything else (a proxy's page) gets a plain sentence.
async function errorMessage(response) {
  try {
    const status = await response.json();
    if (status && typeof status.message === "string" && status.message) return status.message;
  } catch (_ignored) {
    // not JSON: fall through
  }
  return "The service answered " + response.status + " " + response.statusText + ".";
}

function parseFilter() {
  const clauses = [];
  for (const part of $("filter").value.split(",")) {
    if (!part.trim()) continue;
    const eq = part.indexOf("=");
    if (eq <= 0) throw new Error("Write each filter as key=value (several values as key=v1|v2): " + part.trim());
    const values = part.slice(eq + 1).split("|").map((v) => v.trim()).filter((v) => v);
    if (!values.length) throw new Error("The filter on " + part.slice(0, eq).trim() + " has no value.");
    clauses.push({ key: part.slice(0, eq).trim(), anyOf: values });
  }
  const tagsAll = $("tags").value.split(",").map((t) => t.trim()).filter((t) => t);
  return clauses.length || tagsAll.length ? { clauses: clauses, tagsAll: tagsAll } : null;
}

function baseRequest() {
  const request = {};
  const k = parseInt($("k").value, 10);
  if (!Number.isNaN(k)) request.k = k;
  if ($("target").value) request.target = $("target").value;
  const filter = parseFilter();
  if (filter) request.filter = filter;
  return request;
}

function finished() {
  state.searches += 1;
  $("status").dataset.searches = String(state.searches);
}

// query: {text} | {likeId} | {file}
async function search(query) {
  try {
    await runSearch(query);
  } finally {
    finished();
  }
}

async function runSearch(query) {
  showError("");
  let request;
  try {
    request = baseRequest();
  } catch (err) {
    showError(err.message);
    return;
  }
  let init;
  if (query.file) {
    const form = new FormData();
    form.append("request", JSON.stringify(request));
    // A sound file is sent as the request's `audio` bytes (its first clip is searched with), anything else as `image`.
    const part = (query.file.type || "").startsWith("audio/") ? "audio" : "image";
    form.append(part, query.file, query.file.name || part);
    init = { method: "POST", headers: headers(), body: form };
  } else {
    if (query.text !== undefined) request.text = query.text;
    if (query.likeId !== undefined) request.likeId = query.likeId;
    init = { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(request) };
  }
  $("status").textContent = "Searching...";
  const started = performance.now();
  let response;
  try {
    response = await fetch("/v1/search", init);
  } catch (_err) {
    $("status").textContent = "";
    showError("Cannot reach the search service. Check that it is running and try again.");
    return;
  }
  if (!response.ok) {
    $("status").textContent = "";
    showError(await errorMessage(response));
    return;
  }
  const reply = await response.json();
  const took = Math.round(performance.now() - started);
  let note = reply.results.length + " result(s) in " + took + " ms";
  if (reply.partialShards && reply.partialShards.length) note += " (partial: shard(s) " + reply.partialShards.join(", ") + " did not answer)";
  $("status").textContent = note;
  render(reply.results);
}

function itemUrl(id, what) {
  return "/v1/items/" + encodeURIComponent(id) + "/" + what;
}

// Without a key the browser loads media itself (video gets Range requests); with one, it is fetched with the
// Authorization header and shown from a blob URL.
async function mediaSource(id, what) {
  if (!apiKey()) return itemUrl(id, what);
  const response = await fetch(itemUrl(id, what), { headers: headers() });
  if (!response.ok) throw new Error(await errorMessage(response));
  const url = URL.createObjectURL(await response.blob());
  state.objectUrls.push(url);
  return url;
}

function isVideo(result) {
  return result.modality === "MODALITY_VIDEO";
}

function momentStart(result) {
  if (result.bestSeconds) return result.bestSeconds;
  if (result.startSeconds) return result.startSeconds;
  const frame = parseFloat((result.metadata || {}).frame_seconds);
  return Number.isNaN(frame) ? 0 : frame;
}

function fillMedia(box, result) {
  if (result.modality === "MODALITY_TEXT") {
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = (result.metadata || {}).text || result.id;
    box.appendChild(text);
    return;
  }
  // A sound (whole, or a moment of one) plays in an audio player from /media, from the moment's start.
  const audio = result.modality === "MODALITY_AUDIO";
  const video = isVideo(result);
  const element = document.createElement(video ? "video" : audio ? "audio" : "img");
  if (video || audio) {
    element.controls = true;
    element.preload = "metadata";
    element.muted = video;
    const start = momentStart(result);
    element.addEventListener("loadedmetadata", () => { element.currentTime = start; }, { once: true });
  } else {
    element.alt = result.id;
    element.className = "thumb";
    element.loading = "lazy";
  }
  mediaSource(result.id, video || audio ? "media" : "thumbnail").then(
    (src) => {
      if (video || audio) {
        const start = momentStart(result);
        element.src = src + (src.startsWith("blob:") ? "" : "#t=" + start + (result.endSeconds ? "," + result.endSeconds : ""));
      } else {
        element.src = src;
      }
    },
    (err) => {
      const note = document.createElement("div");
      note.className = "text muted";
      note.textContent = err.message;
      box.replaceChildren(note);
    },
  );
  box.appendChild(element);
}

function render(results) {
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
  const grid = $("results");
  grid.replaceChildren();
  if (!results.length) {
    $("status").textContent += ": nothing matched (try another query, target or filter)";
    return;
  }
  for (const result of results) {
    const card = document.createElement("article");
    card.className = "result";
    card.dataset.id = result.id;
    const media = document.createElement("div");
    media.className = "media";
    fillMedia(media, result);
    const body = document.createElement("div");
    body.className = "body";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = "score " + Number(result.score).toFixed(3);
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = result.id;
    body.append(score, id);
    if (isVideo(result) && result.endSeconds) {
      const span = document.createElement("span");
      span.textContent = "moment " + result.startSeconds.toFixed(1) + "-" + result.endSeconds.toFixed(1) + " s";
      body.appendChild(span);
    }
    const meta = document.createElement("dl");
    for (const [key, value] of Object.entries(result.metadata || {})) {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = value;
      meta.append(dt, dd);
    }
    if ((result.tags || []).length) {
      const dt = document.createElement("dt");
      dt.textContent = "tags";
      const dd = document.createElement("dd");
      dd.textContent = result.tags.join(", ");
      meta.append(dt, dd);
    }
    body.appendChild(meta);
    const more = document.createElement("button");
    more.type = "button";
    more.className = "more secondary";
    more.textContent = "More like this";
    more.addEventListener("click", () => {
      $("query").value = "";
      clearFile();
      search({ likeId: result.id });
    });
    body.appendChild(more);
    card.append(media, body);
    grid.appendChild(card);
  }
}

function setFile(file) {
  if (!file) return;
  const sound = (file.type || "").startsWith("audio/");
  if (file.type && !sound && !file.type.startsWith("image/")) {
    showError("That file is neither an image nor a sound (" + file.type + "); drop a JPEG, PNG, WAV, MP3 or FLAC.");
    return;
  }
  state.file = file;
  const label = $("drop-label");
  label.replaceChildren();
  const preview = document.createElement(sound ? "audio" : "img");
  const url = URL.createObjectURL(file);
  preview.src = url;
  if (sound) preview.controls = true;
  else preview.alt = "query image";
  label.append(preview, document.createTextNode(file.name || (sound ? "sound" : "image")));
  $("clear-file").hidden = false;
  $("query").value = "";
  search({ file: file });
}

function clearFile() {
  state.file = null;
  $("file").value = "";
  $("drop-label").textContent = "Drop an image or a sound here, or click to choose one, to search with it";
  $("clear-file").hidden = true;
}

async function showStats() {
  try {
    const response = await fetch("/v1/stats", { headers: headers() });
    if (!response.ok) return;
    const stats = await response.json();
    $("stats").textContent = stats.totalCount + " items, " + stats.shards.length + " shard(s), model " + stats.modelId;
  } catch (_ignored) {
    // the page works without the counts
  }
}

function init() {
  const saved = sessionStorage.getItem("crossmodal-api-key");
  if (saved) $("api-key").value = saved;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("crossmodal-api-key", apiKey());
    showStats();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.file) {
      search({ file: state.file });
    } else if ($("query").value.trim()) {
      search({ text: $("query").value });
    } else {
      showError("Type what you are looking for, or drop an image.");
    }
  });
  const drop = $("drop");
  drop.addEventListener("click", (event) => { if (event.target.id !== "clear-file") $("file").click(); });
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file").click(); });
  $("file").addEventListener("change", () => setFile($("file").files[0]));
  $("clear-file").addEventListener("click", (event) => { event.stopPropagation(); clearFile(); });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    setFile(event.dataTransfer.files[0]);
  });
  showStats();
}

document.addEventListener("DOMContentLoaded", init);
