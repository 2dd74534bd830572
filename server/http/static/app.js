// attnserve's page: pick a model, send an image, see the predictions and every attention output.
// Plain JavaScript, no build step, nothing fetched from outside this server. The overlay is
// composed here from the answer: the image, the HEATMAP_PNG at the chosen opacity, and boxes
// and glimpse paths drawn from their coordinates (original pixels), so switching maps and
// changing the opacity need no new request.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, blob: null, answer: null, models: {}, targetClass: null, taskImage: null };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// A 429 carries the gateway's retry hint: the request is sent again after it, stretched by a
// random 1–2× so that a burst's callers do not come back together, at most OVERLOAD_RETRIES
// times (as attnserve's own clients do: clients/retry.py).
const OVERLOAD_RETRIES = 3;

function retryHintMs(response) {
  for (const [name, scale] of [["Retry-After-Ms", 1], ["Retry-After", 1000]]) {
    const value = response.headers.get(name);
    if (value !== null && /^\d+$/.test(value.trim())) return Number(value) * scale;
  }
  return null; // no hint (or an HTTP date): not sent again
}

// A pause that ends early, rejecting, when `signal` aborts (a newer prediction took over).
function pauseFor(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

async function getJson(url, options = {}) {
  const key = sessionStorage.getItem("attnserve-api-key");
  const headers = { ...(options.headers || {}), ...(key ? { Authorization: `Bearer ${key}` } : {}) };
  let response = await fetch(url, { ...options, headers });
  for (let retry = 1; retry <= OVERLOAD_RETRIES && response.status === 429; retry++) {
    const hint = retryHintMs(response);
    if (hint === null) break;
    const pause = Math.round(hint * (1 + Math.random()));
    setStatus(`The server is busy: trying again in ${pause} ms (${retry} of ${OVERLOAD_RETRIES})…`);
    await pauseFor(pause, options.signal);
    response = await fetch(url, { ...options, headers });
  }
  const body = await response.json().catch(() => ({ message: response.statusText }));
  if (response.status === 401) {
    $("key-box").hidden = false;
    $("api-key").focus();
  }
  if (!response.ok) throw new Error(`${response.status}: ${body.message || response.statusText}`);
  return body;
}

async function loadModels() {
  const { models = [], default_model: defaultModel } = await getJson("/v1/models");
  const select = $("model");
  select.replaceChildren();
  for (const model of models) {
    state.models[model.name] = model;
    const label = model.ready ? `${model.name} (${model.architecture})` : `${model.name} — not ready: ${model.reason}`;
    const option = new Option(label, model.name);
    option.disabled = !model.ready;
    option.selected = model.name === defaultModel;
    select.append(option);
  }
  describeModel();
}

function describeModel() {
  const model = state.models[$("model").value];
  $("model-description").textContent = model ? model.description : "";
}

async function loadSamples() {
  const { samples = [] } = await getJson("/samples");
  for (const name of samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = `Predict the sample ${name}`;
    const img = document.createElement("img");
    img.src = `/samples/${encodeURIComponent(name)}`;
    img.alt = `sample image ${name}`;
    button.append(img);
    button.addEventListener("click", async () => {
      const response = await fetch(img.src);
      predictBlob(await response.blob());
    });
    $("samples").append(button);
  }
}

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot show this image"));
    image.src = URL.createObjectURL(blob);
  });
}

// The prediction under way: a newer one (another image, model or class) aborts it, its request
// and its retries, so that one page sends one prediction at a time and an older answer never
// replaces a newer one on screen.
let predicting = null;

async function predictBlob(blob, targetClass = null) {
  predicting?.abort();
  const current = new AbortController();
  predicting = current;
  state.blob = blob;
  state.targetClass = targetClass;
  const model = $("model").value;
  const params = new URLSearchParams([["formats", "RAW"], ["formats", "HEATMAP_PNG"]]);
  if (targetClass !== null) params.set("target_class", targetClass);
  const task = state.models[model]?.task || "classification";
  if (task !== "classification") params.set("overlay", "true"); // the answer drawn: classes, masks, word tiles
  setStatus("Predicting…");
  try {
    const answer = await getJson(`/v1/models/${encodeURIComponent(model)}:predict?${params}`, {
      method: "POST",
      headers: { "Content-Type": blob.type || "application/octet-stream" },
      body: blob,
      signal: current.signal,
    });
    const image = await loadImage(blob);
    await Promise.all((answer.attention || []).map(decodeHeatmap));
    const taskImage = answer.task_overlay ? await loadImage(base64Blob(answer.task_overlay, answer.task_overlay_encoding)) : null;
    if (current.signal.aborted) return;
    Object.assign(state, { image, answer, taskImage });
    showAnswer();
    const top = (answer.predictions || [])[0];
    setStatus(top ? `${answer.model}: ${top.label} (${(top.score * 100).toFixed(1)}%)` : `${answer.model}: ${taskSummary(answer)}`);
  } catch (error) {
    if (!current.signal.aborted) setStatus(error.message, true);
  }
}

function base64Blob(data, encoding) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: `image/${encoding || "png"}` });
}

// Segmentation: the classes present and their share; instances: how many, of which classes;
// captions: each word, its probability and where it looked.
function taskAnswers(answer) {
  if (answer.caption) {
    return (answer.caption.words || []).map((word) => {
      const peak = word.peak ? ` at (${Math.round(word.peak.x || 0)}, ${Math.round(word.peak.y || 0)})` : "";
      return { label: word.text, value: `${((word.score || 0) * 100).toFixed(1)}%${peak}` };
    });
  }
  if (answer.segmentation) {
    return (answer.segmentation.areas || [])
      .filter((area) => (area.index ?? 0) !== 0)
      .map((area) => ({ label: area.label, value: `${((area.share || 0) * 100).toFixed(1)}% of the image` }));
  }
  return (answer.instances || []).map((instance) => {
    const box = instance.box || {};
    const where = `(${Math.round(box.x0 || 0)}, ${Math.round(box.y0 || 0)})–(${Math.round(box.x1 || 0)}, ${Math.round(box.y1 || 0)})`;
    return { label: instance.label, value: `${((instance.score || 0) * 100).toFixed(1)}% at ${where}` };
  });
}

function taskSummary(answer) {
  if (answer.caption) return `“${answer.caption.text || ""}”`;
  if (answer.segmentation) return `${taskAnswers(answer).length} classes found`;
  const count = (answer.instances || []).length;
  return `${count} instance${count === 1 ? "" : "s"}`;
}

async function decodeHeatmap(map) {
  if (!map.heatmap_png) return;
  const bytes = Uint8Array.from(atob(map.heatmap_png), (c) => c.charCodeAt(0));
  map.heatmapImage = await loadImage(new Blob([bytes], { type: `image/${map.image_encoding || "png"}` }));
}

function rawValues(map) {
  if (!map.raw || !map.raw.data) return [];
  const bytes = Uint8Array.from(atob(map.raw.data), (c) => c.charCodeAt(0));
  return Array.from(new Float32Array(bytes.buffer));
}

function showAnswer() {
  const answer = state.answer;
  $("result").hidden = false;
  const list = $("predictions");
  list.replaceChildren();
  const shown = state.targetClass ?? (answer.predictions || [])[0]?.index ?? 0;
  for (const found of taskAnswers(answer)) {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = found.label;
    const value = document.createElement("span");
    value.textContent = ` ${found.value}`;
    item.append(label, value);
    list.append(item);
  }
  const drawn = $("task-overlay");
  drawn.hidden = !state.taskImage;
  if (state.taskImage) drawn.src = state.taskImage.src;
  for (const prediction of answer.predictions || []) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-pressed", String((prediction.index ?? 0) === shown));
    button.title = `Explain class ${prediction.label}`;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = prediction.label;
    const score = document.createElement("span");
    score.textContent = `${(prediction.score * 100).toFixed(1)}%`;
    button.append(label, score);
    button.addEventListener("click", () => predictBlob(state.blob, prediction.index ?? 0));
    item.append(button);
    list.append(item);
  }
  const select = $("map");
  const previous = select.value;
  select.replaceChildren();
  const primary = state.models[answer.model]?.primary_attention;
  for (const map of answer.attention || []) {
    const kind = (map.kind || "").replace("ATTENTION_KIND_", "").toLowerCase();
    const option = new Option(`${map.name} — ${kind}${map.name === primary ? " (primary)" : ""}`, map.name);
    select.append(option);
  }
  const names = (answer.attention || []).map((m) => m.name);
  select.value = names.includes(previous) ? previous : names.includes(primary) ? primary : names[0] || "";
  const t = answer.timings || {};
  $("timings").textContent = `preprocess ${(t.preprocess_ms || 0).toFixed(1)} ms · inference ${(t.inference_ms || 0).toFixed(1)} ms · postprocess ${(t.postprocess_ms || 0).toFixed(1)} ms`;
  selectMap();
}

function selectedMap() {
  return (state.answer?.attention || []).find((m) => m.name === $("map").value);
}

// A stack of maps no task selects (a map per word of a caption, per input scale): its heatmap
// comes as one tile per index side by side, 4 px apart; the page shows one tile at a time.
const TILE_GAP = 4;

function stackSize(map) {
  const shape = (map?.raw?.shape || []).map(Number);
  const axes = map?.axes || [];
  return shape.length === 3 && axes.length === 3 && axes[0] !== "class" ? shape[0] : 0;
}

function fillStack(map) {
  const count = stackSize(map);
  const select = $("stack");
  $("stack-box").hidden = count === 0;
  if (count === 0) return;
  const axis = map.axes[0];
  const words = (state.answer.caption?.words || []).map((w) => w.text);
  $("stack-label").textContent = axis === "word" ? "Word" : axis[0].toUpperCase() + axis.slice(1);
  const previous = select.value;
  select.replaceChildren();
  for (let index = 0; index < count; index++) {
    const name = axis === "word" && words[index] ? `${index + 1}: ${words[index]}` : `${axis} ${index}`;
    select.append(new Option(name, String(index)));
  }
  select.value = previous !== "" && Number(previous) < count ? previous : "0";
}

function selectMap() {
  fillStack(selectedMap());
  draw();
}

function draw() {
  if (!state.answer) return;
  const map = selectedMap();
  const info = state.answer.image || {};
  const canvas = $("overlay");
  canvas.width = info.width || state.image.naturalWidth;
  canvas.height = info.height || state.image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  const opacity = Number($("opacity").value) / 100;
  $("opacity-value").textContent = `${Math.round(opacity * 100)}%`;
  if (map?.heatmapImage) {
    context.globalAlpha = opacity;
    const count = stackSize(map);
    if (count > 1) {  // the selected tile of the stack
      const heatmap = map.heatmapImage;
      const tile = (heatmap.naturalWidth - (count - 1) * TILE_GAP) / count;
      const index = Number($("stack").value) || 0;
      context.drawImage(heatmap, index * (tile + TILE_GAP), 0, tile, heatmap.naturalHeight, 0, 0, canvas.width, canvas.height);
    } else {
      context.drawImage(map.heatmapImage, 0, 0, canvas.width, canvas.height);
    }
    context.globalAlpha = 1;
  }
  const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 160));
  if (map?.boxes) drawBoxes(context, map.boxes, line, opacity);
  if (map?.path) drawPath(context, map.path, line, opacity);
  describeMap(map, canvas);
  drawChannels(map);
  canvas.toBlob((blob) => {
    const link = $("download");
    if (link.dataset.url) URL.revokeObjectURL(link.dataset.url);
    link.dataset.url = URL.createObjectURL(blob);
    link.href = link.dataset.url;
    link.download = `${state.answer.model}-${map ? map.name : "image"}.png`;
  }, "image/png");
}

const colours = ["#facc15", "#22d3ee", "#f472b6", "#4ade80", "#fb923c", "#a78bfa"];

function drawBoxes(context, boxes, line, opacity) {
  context.lineWidth = line;
  boxes.forEach((box, index) => {
    context.strokeStyle = colours[index % colours.length];
    context.globalAlpha = Math.max(opacity, 0.35);
    const x0 = box.x0 || 0, y0 = box.y0 || 0;
    context.strokeRect(x0, y0, (box.x1 || 0) - x0, (box.y1 || 0) - y0);
  });
  context.globalAlpha = 1;
}

function drawPath(context, path, line, opacity) {
  context.lineWidth = line;
  context.globalAlpha = Math.max(opacity, 0.35);
  context.strokeStyle = "#22d3ee";
  context.beginPath();
  path.forEach((glimpse, index) => {
    const c = glimpse.center || {};
    if (index === 0) context.moveTo(c.x || 0, c.y || 0);
    else context.lineTo(c.x || 0, c.y || 0);
  });
  context.stroke();
  context.font = `${line * 6}px system-ui, sans-serif`;
  path.forEach((glimpse, index) => {
    const patch = (glimpse.patches || [])[0];
    context.strokeStyle = colours[index % colours.length];
    if (patch) {
      const x0 = patch.x0 || 0, y0 = patch.y0 || 0;
      context.strokeRect(x0, y0, (patch.x1 || 0) - x0, (patch.y1 || 0) - y0);
    }
    const c = glimpse.center || {};
    context.fillStyle = colours[index % colours.length];
    context.fillText(String(index + 1), (c.x || 0) + line, (c.y || 0) - line);
  });
  context.globalAlpha = 1;
}

function describeMap(map, canvas) {
  const info = state.models[state.answer.model]?.attention?.find((a) => a.name === map?.name);
  $("map-description").textContent = info ? info.description : "";
  let caption = map ? `${map.name} on a ${canvas.width}×${canvas.height} image` : "no attention output";
  if (map?.peak) caption += `; peak at (${(map.peak.x || 0).toFixed(0)}, ${(map.peak.y || 0).toFixed(0)}) px`;
  if (map?.class_label) caption += `; explains class ${map.class_label}`;
  if (stackSize(map) > 1) caption += `; ${$("stack").selectedOptions[0]?.textContent || ""} of ${stackSize(map)}`;
  if (map?.flat) caption += "; flat: no contrast to show";
  $("caption").textContent = caption;
  canvas.setAttribute("aria-label", `The image with ${caption}`);
}

function drawChannels(map) {
  const isChannel = map && (map.kind || "").endsWith("CHANNEL");
  $("channels").hidden = !isChannel;
  if (!isChannel) return;
  const values = rawValues(map);
  const canvas = $("bars");
  canvas.width = Math.max(values.length * 4, 256);
  canvas.height = 96;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const width = canvas.width / Math.max(values.length, 1);
  const top = Math.max(...values, 1e-6);
  context.fillStyle = "#2563eb";
  values.forEach((value, index) => {
    const height = (Math.max(value, 0) / top) * canvas.height;
    context.fillRect(index * width, canvas.height - height, Math.max(width - 1, 1), height);
  });
  canvas.setAttribute("aria-label", `${values.length} channel weights of ${map.name}, largest ${top.toFixed(3)}`);
}

function wire() {
  $("api-key").addEventListener("change", (event) => {
    sessionStorage.setItem("attnserve-api-key", event.target.value.trim());
    loadModels().then(() => setStatus("")).catch((error) => setStatus(error.message, true));
  });
  $("model").addEventListener("change", () => {
    describeModel();
    if (state.blob) predictBlob(state.blob);
  });
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) predictBlob(file);
  });
  $("map").addEventListener("change", selectMap);
  $("stack").addEventListener("change", draw);
  $("opacity").addEventListener("input", draw);
  const drop = $("drop");
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file").click();
    }
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) predictBlob(file);
  });
}

wire();
Promise.all([loadModels(), loadSamples()]).catch((error) => setStatus(error.message, true));
