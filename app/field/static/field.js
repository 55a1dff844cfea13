// The field page: take or pick photos, shrink them in the browser, send them to the service,
// show each photo's label and probability. Plain JavaScript, no build step, no other origin.
// URLs are relative ("v1/predict"), so the page also works behind a proxy under a path prefix.
"use strict";

(() => {
  const KEY_STORAGE = "invasive.apiKey";
  const KEY_HEADER = "X-API-Key";
  // The model needs a few hundred pixels; field bandwidth is scarce. The long side is cut to
  // MAX_LONG_SIDE px, but never so far that the short side drops under twice the model's input.
  const MAX_LONG_SIDE = 1024;
  const JPEG_QUALITY = 0.9;
  const DEFAULT_INPUT_SIZE = 224;
  // A photo small enough already is sent as it is if the service reads its format; any other
  // format the browser decodes (AVIF, ICO...) is re-encoded as JPEG.
  const SERVICE_FORMATS = new Set([
    "image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff",
  ]);
  // Answers worth sending the same photo again for: the service was busy, starting, away.
  const RETRYABLE_STATUS = new Set([408, 429, 502, 503, 504]);
  const AUTO_RETRIES = 4; // busy answers resent by themselves (after Retry-After, doubling)

  // What each of the service's error codes means for someone standing in a field.
  const PLAIN_WORDS = {
    unsupported_media_type: "This file is not a photo the service can read. Send a JPEG, PNG, WebP, HEIC or AVIF photo.",
    corrupt_image: "This photo is damaged or incomplete. Take it again.",
    empty_file: "This file is empty.",
    image_too_large: "This image is too large for the service.",
    file_too_large: "This file is too large for the service.",
    payload_too_large: "These photos are too large to send together. Send fewer at a time.",
    too_many_files: "Too many photos at once. Send fewer at a time.",
    too_large_to_send: "This file is too large to send to the service.",
    image_too_complex: "This image is built in a way the service refuses to decode.",
    decode_timeout: "This image took too long to decode.",
    unauthorized: "The service needs a valid API key.",
    queue_full: "The service is busy. Try again in a moment.",
    at_capacity: "The service is busy. Try again in a moment.",
    request_timeout: "The service took too long to answer. Try again in a moment.",
    model_not_ready: "The service is starting up. Try again in a moment.",
    shutting_down: "The service is restarting. Try again in a moment.",
    decoder_unavailable: "The service had a hiccup decoding this photo. Try again.",
    network: "Could not reach the service. Check the connection and try again.",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    model: $("model"),
    keySaved: $("key-saved"),
    forgetKey: $("forget-key"),
    keyForm: $("key-form"),
    keyMessage: $("key-message"),
    keyInput: $("api-key"),
    status: $("status"),
    empty: $("empty"),
    results: $("results"),
    camera: $("camera"),
    pick: $("pick"),
  };

  let inputSize = DEFAULT_INPUT_SIZE;
  // the service's limits, from /v1/model (until it answers: send, and let it say)
  let limits = { maxUploadBytes: Infinity, maxBatchFiles: 32 };
  let modelRetry = null;
  // photos that could not be checked for a passing reason, kept to be sent again
  const waiting = new Set();

  // ------------------------------------------------------------------ the API key

  const storedKey = {
    get() {
      try {
        return localStorage.getItem(KEY_STORAGE) || "";
      } catch {
        return ""; // storage disabled (private mode): the key lives only in this page
      }
    },
    set(value) {
      try {
        localStorage.setItem(KEY_STORAGE, value);
      } catch {
        /* not remembered, still used below */
      }
      sessionKey = value;
    },
    clear() {
      try {
        localStorage.removeItem(KEY_STORAGE);
      } catch {
        /* nothing stored */
      }
      sessionKey = "";
    },
  };
  let sessionKey = storedKey.get();

  function authHeaders(key = sessionKey) {
    return key ? { [KEY_HEADER]: key } : {};
  }

  function showKeyForm(message, isError) {
    el.keyForm.hidden = false;
    el.keyMessage.textContent = message;
    el.keyMessage.classList.toggle("error", Boolean(isError));
    el.keySaved.hidden = true;
  }

  function hideKeyForm() {
    el.keyForm.hidden = true;
    el.keyInput.value = "";
    el.keySaved.hidden = !sessionKey;
  }

  // ------------------------------------------------------------------ talking to the service

  async function readError(response) {
    const error = { status: response.status, code: `http_${response.status}`, message: "" };
    try {
      const body = await response.json();
      if (body && body.error) {
        error.code = body.error.code;
        error.message = body.error.message;
      }
    } catch {
      error.message = response.statusText || `HTTP ${response.status}`;
    }
    return error;
  }

  function plainWords(error, count = 1) {
    if (count === 1 && error.code === "payload_too_large") {
      return PLAIN_WORDS.file_too_large;
    }
    return PLAIN_WORDS[error.code] || error.message || "Something went wrong.";
  }

  function retryAfterMs(response) {
    const seconds = Number(response.headers.get("Retry-After"));
    return Math.min(10, Math.max(1, Number.isFinite(seconds) ? seconds : 2)) * 1000;
  }

  // GET v1/model with ``key``: 200 shows the model, 401 asks for a key, 503 retries.
  async function loadModel(key = sessionKey) {
    clearTimeout(modelRetry);
    let response;
    try {
      response = await fetch("v1/model", { headers: authHeaders(key), cache: "no-store" });
    } catch {
      el.model.textContent = waiting.size
        ? "Cannot reach the service. The photos waiting will be sent once it answers."
        : "Cannot reach the service. Checking again every few seconds.";
      delete el.model.dataset.modelId;
      modelRetry = setTimeout(start, 5000);
      return "network";
    }
    if (response.status === 401) {
      return "unauthorized";
    }
    if (!response.ok) {
      const error = await readError(response);
      el.model.textContent = `${plainWords(error)} (${error.message || error.code})`;
      delete el.model.dataset.modelId;
      if (response.status === 503) {
        modelRetry = setTimeout(start, retryAfterMs(response));
      }
      return error.code;
    }
    showModel(await response.json());
    return "ok";
  }

  function showModel(info) {
    inputSize = Number(info.input_size) || DEFAULT_INPUT_SIZE;
    if (info.limits) {
      limits = {
        maxUploadBytes: Number(info.limits.max_upload_bytes) || Infinity,
        maxBatchFiles: Math.max(1, Number(info.limits.max_batch_files) || 1),
      };
    }
    el.model.textContent = `Model: ${info.model_id}`;
    el.model.dataset.modelId = info.model_id;
    el.model.dataset.threshold = String(info.threshold);
    if (info.demo) {
      const badge = document.createElement("span");
      badge.className = "demo-badge";
      badge.id = "demo-badge";
      badge.textContent = "demo checkpoint";
      const why = document.createElement("span");
      why.className = "demo-note";
      why.textContent = "Trained on generated images, never on real plants: do not rely on its answers.";
      el.model.append(" ", badge, why);
    }
  }

  // Ask the service what it serves; on the way, ask for a key it wants, and send the photos
  // waiting once it answers. Called at load, while it is unreachable or busy, and after a key.
  async function start() {
    const outcome = await loadModel();
    if (outcome === "unauthorized") {
      if (sessionKey) {
        showKeyForm("The saved API key was not accepted. Enter the current key.", true);
      } else {
        showKeyForm("This service needs an API key. Ask whoever runs it.", false);
      }
      el.model.textContent = "Waiting for an API key.";
      return outcome;
    }
    hideKeyForm();
    if (outcome === "ok") {
      sendWaiting();
    }
    return outcome;
  }

  el.keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = el.keyInput.value.trim();
    if (!candidate) {
      showKeyForm("Type the API key first.", true);
      el.keyInput.focus();
      return;
    }
    const outcome = await loadModel(candidate);
    if (outcome === "unauthorized") {
      showKeyForm("That key was not accepted. Check it and try again.", true);
      el.keyInput.select();
      el.keyInput.focus();
      return;
    }
    if (outcome === "network") {
      // not checked, so not saved: a mistyped key would be kept and fail later
      showKeyForm("Cannot reach the service to check the key. Try again once connected.", true);
      return;
    }
    storedKey.set(candidate); // accepted (or the service is merely busy): remember it
    hideKeyForm();
    announce("API key saved on this device.");
    if (outcome === "ok") {
      sendWaiting();
    }
  });

  el.forgetKey.addEventListener("click", () => {
    storedKey.clear();
    el.keySaved.hidden = true;
    announce("API key forgotten on this device.");
    start();
  });

  // ------------------------------------------------------------------ preparing photos

  // Decode (honouring EXIF orientation), shrink, re-encode as JPEG. A file the browser cannot
  // decode (not an image, or HEIC outside Safari) is sent as it is: the service decodes HEIC,
  // and answers anything else with its own error.
  async function preparePhoto(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch {
      return { blob: file, preview: null };
    }
    try {
      const { width, height } = bitmap;
      const long = Math.max(width, height);
      const short = Math.min(width, height);
      const scale = Math.min(1, Math.max(MAX_LONG_SIDE / long, (2 * inputSize) / short));
      if (scale >= 1 && SERVICE_FORMATS.has(file.type)) {
        return { blob: file, preview: URL.createObjectURL(file) }; // small already
      }
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(width * Math.min(1, scale)));
      canvas.height = Math.max(1, Math.round(height * Math.min(1, scale)));
      const context = canvas.getContext("2d");
      // JPEG has no transparency: what was transparent becomes white, as the service does
      context.fillStyle = "#fff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.imageSmoothingEnabled = true;
      context.imageSmoothingQuality = "high";
      context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
      if (!blob) {
        return { blob: file, preview: URL.createObjectURL(file) };
      }
      return { blob, preview: URL.createObjectURL(blob) };
    } finally {
      bitmap.close();
    }
  }

  // ------------------------------------------------------------------ showing results

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  function formatMs(ms) {
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  function percent(p) {
    return `${Math.round(p * 100)}%`;
  }

  function labelText(label) {
    const words = String(label).replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function line(className, text) {
    const p = document.createElement("p");
    p.className = className;
    if (text) p.textContent = text;
    return p;
  }

  function makeItem(file) {
    const li = document.createElement("li");
    li.className = "result pending";
    li.setAttribute("aria-busy", "true");
    const thumb = document.createElement("div");
    thumb.className = "thumb thumb-missing";
    thumb.textContent = "…";
    const body = document.createElement("div");
    body.className = "result-body";
    body.append(line("file-name", file.name || "photo"), line("verdict", "Preparing…"));
    li.append(thumb, body);
    return li;
  }

  function setThumb(li, preview) {
    const old = li.querySelector(".thumb");
    if (preview) {
      const img = document.createElement("img");
      img.className = "thumb";
      img.src = preview;
      img.alt = ""; // the file name beside it says what it is
      img.width = 72;
      img.height = 72;
      old.replaceWith(img);
    } else {
      old.textContent = "no preview";
    }
  }

  // ``sent``: false when the bytes never reached the service (refused here, no connection)
  function finish(li, elapsedMs, sentBytes, batchSize, sent = true) {
    li.classList.remove("pending");
    li.removeAttribute("aria-busy");
    li.dataset.elapsedMs = String(Math.round(elapsedMs));
    li.dataset.sentBytes = String(sent ? sentBytes : 0);
    const size = `, ${formatBytes(sentBytes)} ${sent ? "sent" : "not sent"}`;
    const batch = batchSize > 1 ? ` for the batch of ${batchSize}` : "";
    li.querySelector(".result-body").append(line("elapsed", `${formatMs(elapsedMs)}${batch}${size}`));
  }

  function showPrediction(entry, prediction, elapsedMs, batchSize) {
    const li = entry.li;
    const body = li.querySelector(".result-body");
    const verdict = body.querySelector(".verdict");
    // A multi-class model answers invasive: null and threshold: null (label = the top class).
    const multiclass = prediction.invasive === null;
    li.classList.add(multiclass ? "multiclass" : prediction.invasive ? "invasive" : "not-invasive");
    li.dataset.label = prediction.label;
    li.dataset.probability = String(prediction.probability);
    verdict.textContent = "";
    const strong = document.createElement("strong");
    strong.textContent = labelText(prediction.label);
    // The label with its own class's probability ("Not invasive 96%", never the invasive
    // class's 4% beside it); the bar and the detail line show the invasive class's.
    const own = (prediction.probabilities || {})[prediction.label];
    verdict.append(strong, ` ${percent(own ?? prediction.probability)}`);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true"); // the text says the same
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${Math.max(0, Math.min(1, prediction.probability)) * 100}%`;
    const mark = document.createElement("span");
    mark.className = "bar-mark";
    mark.style.left = `${Math.max(0, Math.min(1, prediction.threshold)) * 100}%`;
    bar.append(fill);
    if (!multiclass) bar.append(mark);
    const ranked = Object.entries(prediction.probabilities || {})
      .sort((a, b) => b[1] - a[1])
      .map(([name, p]) => `${labelText(name)} ${percent(p)}`);
    body.append(
      bar,
      line("detail", multiclass
        ? `Probabilities: ${ranked.join(", ")}`
        : `Probability invasive ${percent(prediction.probability)}, threshold ${percent(prediction.threshold)}`),
    );
    finish(li, elapsedMs, entry.photo.blob.size, batchSize);
  }

  // ``retry``: the photo is kept and can be sent again (a button; busy answers by themselves)
  function showError(entry, error, elapsedMs, batchSize, { sent = true, retry = false } = {}) {
    const li = entry.li;
    li.classList.add("failed");
    li.classList.toggle("waiting", retry);
    li.dataset.error = error.code;
    li.querySelector(".verdict").textContent = plainWords(error);
    let detail = error.code;
    if (error.local) {
      detail = error.message;
    } else if (error.code === "network") {
      detail = "No answer from the service (network).";
    } else if (error.message) {
      detail = `Service said: ${error.message} (${error.code})`;
    }
    const body = li.querySelector(".result-body");
    body.append(line("detail", detail));
    finish(li, elapsedMs, entry.photo.blob.size, batchSize, sent);
    if (retry) {
      const again = document.createElement("button");
      again.type = "button";
      again.className = "link-button retry";
      again.textContent = "Send again";
      again.addEventListener("click", () => resend([entry]));
      body.append(again);
    }
  }

  // Back to "sending": the last attempt's answer, timing and button go.
  function resetItem(li) {
    li.classList.remove("failed", "waiting");
    li.classList.add("pending");
    li.setAttribute("aria-busy", "true");
    delete li.dataset.error;
    li.querySelectorAll(".detail, .elapsed, .retry").forEach((node) => node.remove());
    li.querySelector(".verdict").textContent = "Sending again…";
  }

  function announce(message, isError = false) {
    el.status.textContent = message;
    el.status.classList.toggle("error", isError);
  }

  // Once nothing is on its way: this photo's answer, or the tally of every photo on the page.
  function summarise(entries) {
    const items = Array.from(el.results.children);
    const has = (name) => items.filter((li) => li.classList.contains(name)).length;
    if (has("pending")) {
      return; // the last send to finish says it
    }
    const toResend = has("waiting");
    const unreadable = has("failed") - toResend;
    const only = entries.length === 1 ? entries[0].li : null;
    if (only && only.dataset.label && !toResend) {
      const name = only.querySelector(".file-name").textContent;
      announce(`${name}: ${only.querySelector(".verdict").textContent}`);
      return;
    }
    const parts = [`${items.length - toResend} photo${items.length - toResend === 1 ? "" : "s"} checked`];
    if (unreadable) parts.push(`${unreadable} could not be read`);
    if (toResend) parts.push(`${toResend} waiting to be sent again`);
    announce(`${parts.join(", ")}.`, Boolean(unreadable || toResend));
  }

  // ------------------------------------------------------------------ sending photos

  async function sendPhotos(files) {
    const entries = files.map((file) => ({ file, li: makeItem(file), photo: null, autoRetries: 0 }));
    el.results.prepend(...entries.map((entry) => entry.li)); // newest first, in the order sent
    el.empty.hidden = true;
    for (const entry of entries) {
      entry.photo = await preparePhoto(entry.file); // one at a time: phones run out of memory
      setThumb(entry.li, entry.photo.preview);
    }
    await send(entries);
  }

  // In batches the service takes, one after the other. A file over its upload limit is told so
  // here and never sent: it would fail the batch it is in.
  async function send(entries) {
    if (!entries.length) return;
    const sendable = [];
    for (const entry of entries) {
      const size = entry.photo.blob.size;
      if (size > limits.maxUploadBytes) {
        const message = `${formatBytes(size)}; the service takes files up to ${formatBytes(limits.maxUploadBytes)}.`;
        showError(entry, { code: "too_large_to_send", message, local: true }, 0, 1, { sent: false });
      } else {
        sendable.push(entry);
      }
    }
    for (let i = 0; i < sendable.length; i += limits.maxBatchFiles) {
      await sendBatch(sendable.slice(i, i + limits.maxBatchFiles));
    }
    summarise(entries);
  }

  async function sendBatch(entries) {
    entries.forEach((entry) => { entry.li.querySelector(".verdict").textContent = "Sending…"; });
    const single = entries.length === 1;
    const n = entries.length;
    const form = new FormData();
    entries.forEach((entry) => form.append(single ? "file" : "files", entry.photo.blob, entry.file.name));
    announce(single ? "Checking 1 photo…" : `Checking ${n} photos…`);
    const started = performance.now();
    const elapsed = () => performance.now() - started;

    let response;
    try {
      response = await fetch(single ? "v1/predict" : "v1/predict/batch", {
        method: "POST",
        body: form,
        headers: authHeaders(),
      });
    } catch {
      entries.forEach((entry) => keepForLater(entry, { code: "network" }, elapsed(), n, false));
      clearTimeout(modelRetry);
      modelRetry = setTimeout(start, 5000); // sends them once the service answers again
      return;
    }
    if (!response.ok) {
      const error = await readError(response);
      if (!single && response.status === 413) {
        // over a body limit (the service's, or a proxy's in front of it): one by one instead
        for (const entry of entries) await sendBatch([entry]);
        return;
      }
      if (response.status === 401) {
        entries.forEach((entry) => keepForLater(entry, error, elapsed(), n)); // sent with a key
        showKeyForm(
          sessionKey ? "The saved API key was not accepted. Enter the current key." : "This service needs an API key. Ask whoever runs it.",
          Boolean(sessionKey),
        );
        el.keyInput.focus();
        return;
      }
      if (RETRYABLE_STATUS.has(response.status)) {
        entries.forEach((entry) => keepForLater(entry, error, elapsed(), n));
        retryLater(entries, retryAfterMs(response));
        return;
      }
      entries.forEach((entry) => showError(entry, error, elapsed(), n));
      return;
    }
    const answer = await response.json();
    if (!el.model.dataset.modelId) start(); // the header still says it could not reach it
    if (single) {
      showPrediction(entries[0], answer, elapsed(), 1);
      return;
    }
    for (const result of answer.results) {
      const entry = entries[result.index];
      if (result.prediction) {
        showPrediction(entry, result.prediction, elapsed(), n);
      } else {
        showError(entry, { status: result.status, ...result.error }, elapsed(), n);
      }
    }
  }

  function keepForLater(entry, error, elapsedMs, batchSize, sent = true) {
    showError(entry, error, elapsedMs, batchSize, { sent, retry: true });
    waiting.add(entry);
  }

  // Busy answers: sent again by themselves after Retry-After, doubling, a few times.
  function retryLater(entries, delayMs) {
    const due = entries.filter((entry) => entry.autoRetries < AUTO_RETRIES);
    if (!due.length) return;
    const attempt = Math.max(...due.map((entry) => entry.autoRetries));
    due.forEach((entry) => { entry.autoRetries += 1; });
    setTimeout(() => resend(due.filter((entry) => waiting.has(entry))), delayMs * 2 ** attempt);
  }

  function resend(entries) {
    entries.forEach((entry) => {
      waiting.delete(entry);
      resetItem(entry.li);
    });
    return send(entries);
  }

  function sendWaiting() {
    if (waiting.size) resend(Array.from(waiting));
  }

  function onFilesChosen(event) {
    const input = event.target;
    const files = Array.from(input.files || []);
    input.value = ""; // the same photo can be chosen again
    if (files.length) {
      sendPhotos(files);
    }
  }

  el.camera.addEventListener("change", onFilesChosen);
  el.pick.addEventListener("change", onFilesChosen);
  start();
})();
