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

  // What each of the service's error codes means for someone standing in a field.
  const PLAIN_WORDS = {
    unsupported_media_type: "This file is not a photo the service can read. Send a JPEG, PNG, WebP or HEIC photo.",
    corrupt_image: "This photo is damaged or incomplete. Take it again.",
    empty_file: "This file is empty.",
    image_too_large: "This image is too large for the service.",
    file_too_large: "This file is too large for the service.",
    payload_too_large: "These photos are too large to send together. Send fewer at a time.",
    too_many_files: "Too many photos at once. Send fewer at a time.",
    image_too_complex: "This image is built in a way the service refuses to decode.",
    decode_timeout: "This image took too long to decode.",
    unauthorized: "The service needs a valid API key.",
    queue_full: "The service is busy. Try again in a moment.",
    at_capacity: "The service is busy. Try again in a moment.",
    request_timeout: "The service took too long to answer. Try again in a moment.",
    model_not_ready: "The service is starting up. Try again in a moment.",
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
  let modelRetry = null;

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

  function plainWords(error) {
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
      el.model.textContent = "Cannot reach the service. Photos will be sent once it answers.";
      modelRetry = setTimeout(() => loadModel(), 5000);
      return "network";
    }
    if (response.status === 401) {
      return "unauthorized";
    }
    if (!response.ok) {
      const error = await readError(response);
      el.model.textContent = `${plainWords(error)} (${error.message || error.code})`;
      if (response.status === 503) {
        modelRetry = setTimeout(() => loadModel(), retryAfterMs(response));
      }
      return error.code;
    }
    showModel(await response.json());
    return "ok";
  }

  function showModel(info) {
    inputSize = Number(info.input_size) || DEFAULT_INPUT_SIZE;
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

  async function start() {
    const outcome = await loadModel();
    if (outcome === "unauthorized") {
      if (sessionKey) {
        showKeyForm("The saved API key was not accepted. Enter the current key.", true);
      } else {
        showKeyForm("This service needs an API key. Ask whoever runs it.", false);
      }
      el.model.textContent = "Waiting for an API key.";
    } else {
      hideKeyForm();
    }
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
    storedKey.set(candidate); // accepted (or the service is merely busy): remember it
    hideKeyForm();
    announce("API key saved on this device.");
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
      if (scale >= 1) {
        return { blob: file, preview: URL.createObjectURL(file) }; // small already
      }
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(width * scale));
      canvas.height = Math.max(1, Math.round(height * scale));
      const context = canvas.getContext("2d");
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

  function finish(li, elapsedMs, sentBytes, batchSize) {
    li.classList.remove("pending");
    li.removeAttribute("aria-busy");
    li.dataset.elapsedMs = String(Math.round(elapsedMs));
    if (sentBytes !== undefined) li.dataset.sentBytes = String(sentBytes);
    const sent = sentBytes === undefined ? "" : `, ${formatBytes(sentBytes)} sent`;
    const batch = batchSize > 1 ? ` for the batch of ${batchSize}` : "";
    li.querySelector(".result-body").append(line("elapsed", `${formatMs(elapsedMs)}${batch}${sent}`));
  }

  function showPrediction(li, prediction, elapsedMs, sentBytes, batchSize) {
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
    verdict.append(strong, ` ${percent(prediction.probability)}`);
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
    finish(li, elapsedMs, sentBytes, batchSize);
  }

  function showError(li, error, elapsedMs, sentBytes, batchSize) {
    li.classList.add("failed");
    li.dataset.error = error.code;
    li.querySelector(".verdict").textContent = plainWords(error);
    const detail = error.message ? `Service said: ${error.message} (${error.code})` : error.code;
    li.querySelector(".result-body").append(line("detail", detail));
    finish(li, elapsedMs, sentBytes, batchSize);
  }

  function announce(message, isError = false) {
    el.status.textContent = message;
    el.status.classList.toggle("error", isError);
  }

  // ------------------------------------------------------------------ sending photos

  async function sendPhotos(files) {
    const items = files.map(makeItem);
    el.results.prepend(...items); // newest first, each batch in the order it was sent
    el.empty.hidden = true;
    const n = files.length;
    const started = performance.now();
    const prepared = [];
    for (let i = 0; i < files.length; i += 1) {
      prepared.push(await preparePhoto(files[i])); // one at a time: phones run out of memory
      setThumb(items[i], prepared[i].preview);
      items[i].querySelector(".verdict").textContent = "Sending…";
    }
    const single = files.length === 1;
    const form = new FormData();
    prepared.forEach((photo, i) => form.append(single ? "file" : "files", photo.blob, files[i].name));
    const sizes = prepared.map((photo) => photo.blob.size);
    announce(single ? "Checking 1 photo…" : `Checking ${files.length} photos…`);

    let response;
    try {
      response = await fetch(single ? "v1/predict" : "v1/predict/batch", {
        method: "POST",
        body: form,
        headers: authHeaders(),
      });
    } catch {
      const error = { code: "network", message: "" };
      items.forEach((li, i) => showError(li, error, performance.now() - started, sizes[i], n));
      announce(plainWords(error), true);
      return;
    }
    const elapsed = () => performance.now() - started;
    if (!response.ok) {
      const error = await readError(response);
      items.forEach((li, i) => showError(li, error, elapsed(), sizes[i], n));
      if (response.status === 401) {
        showKeyForm(
          sessionKey ? "The saved API key was not accepted. Enter the current key." : "This service needs an API key. Ask whoever runs it.",
          Boolean(sessionKey),
        );
        el.keyInput.focus();
      }
      announce(plainWords(error), true);
      return;
    }
    const answer = await response.json();
    if (single) {
      showPrediction(items[0], answer, elapsed(), sizes[0]);
      announce(`${files[0].name}: ${labelText(answer.label)} ${percent(answer.probability)}`);
      return;
    }
    for (const result of answer.results) {
      const li = items[result.index];
      if (result.prediction) {
        showPrediction(li, result.prediction, elapsed(), sizes[result.index], n);
      } else {
        showError(li, { status: result.status, ...result.error }, elapsed(), sizes[result.index], n);
      }
    }
    const failed = answer.count - answer.succeeded;
    announce(`${answer.count} photos checked${failed ? `, ${failed} could not be read` : ""}.`);
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
