// The smartthumb page: read the picked images, POST /thumbnail, long-poll GET /job/{id},
// then fetch the image (with the token, so it works when auth is on) and show it.
"use strict";

const $ = (selector) => document.querySelector(selector);
const TERMINAL = new Set(["done", "failed"]);
let picked = [];

function authHeaders() {
  const token = $("#token").value.trim();
  localStorage.setItem("smartthumb-token", token);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...authHeaders(), ...(options.headers || {}) },
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch (_) { /* not our JSON error shape: keep the status line */ }
    throw new Error(message);
  }
  return response;
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);  // a data: URL, accepted by the API
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function setPicked(files) {
  picked = [...files].filter((file) => file.type.startsWith("image/"));
  $("#picked").replaceChildren(...picked.map((file) => {
    const item = document.createElement("li");
    item.textContent = `${file.name} (${Math.round(file.size / 1024)} KiB)`;
    return item;
  }));
  $("#drop-text").textContent = picked.length
    ? `${picked.length} image(s) picked` : "Drop images here or click to pick";
}

function spec() {
  const number = (id) => ($(id).value ? Number($(id).value) : null);
  const body = {
    mode: $("#mode").value,
    format: $("#format").value,
    quality: number("#quality") ?? 82,
    grayscale: $("#grayscale").checked,
  };
  const width = number("#width");
  const height = number("#height");
  if (width) body.width = width;
  if (height) body.height = height;
  return body;
}

function jobCard(title) {
  const card = document.createElement("article");
  card.className = "job";
  card.innerHTML = '<h2></h2><p class="status">submitting…</p><p class="detail"></p>';
  card.querySelector("h2").textContent = title;
  $("#jobs").prepend(card);
  return card;
}

function describe(job) {
  if (job.status === "queued") return `queued (position ${job.queue_position ?? "?"})`;
  return job.status;
}

async function run(files, body, card) {
  const imageFiles = await Promise.all(files.map(async (file) => ({
    filename: file.name, content_base64: await readBase64(file),
  })));
  const accepted = await (await api("/thumbnail", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, image_files: imageFiles }),
  })).json();
  card.dataset.jobId = accepted.job_id;
  let job = { status: accepted.status, queue_position: accepted.queue_position };
  while (!TERMINAL.has(job.status)) {
    card.querySelector(".status").textContent = describe(job);
    job = await (await api(`/job/${accepted.job_id}?wait=10`)).json();
  }
  card.classList.add(job.status);
  card.querySelector(".status").textContent = job.status;
  if (job.status === "failed") {
    card.querySelector(".detail").textContent = job.error;
    return;
  }
  await show(job, card);
}

async function show(job, card) {
  const blob = await (await api(`/job/${job.job_id}/image`)).blob();
  const url = URL.createObjectURL(blob);
  const output = job.result.output;
  const image = document.createElement("img");
  image.className = "result";
  image.alt = `thumbnail ${output.width}x${output.height}`;
  image.src = url;
  const link = document.createElement("a");
  link.className = "download";
  link.href = url;
  link.download = `${job.job_id}.${output.format === "jpeg" ? "jpg" : output.format}`;
  link.textContent = `Download ${output.width}x${output.height} ${output.format}`
    + ` (${Math.round(output.bytes / 1024)} KiB)`;
  const method = document.createElement("p");
  method.textContent = `method: ${job.result.method}`
    + (job.result.fallback_used ? ` (fallback: ${job.result.worker_warning})` : "");
  card.querySelector(".detail").replaceChildren(image, link, method);
}

async function submit(event) {
  event.preventDefault();
  $("#error").textContent = "";
  if (!picked.length) {
    $("#error").textContent = "Pick at least one image.";
    return;
  }
  const body = spec();
  // pair composes all pages into one thumbnail; the other modes make one per image.
  const groups = body.mode === "pair" ? [picked] : picked.map((file) => [file]);
  await Promise.all(groups.map(async (files) => {
    const card = jobCard(files.map((file) => file.name).join(", "));
    try {
      await run(files, body, card);
    } catch (error) {
      card.classList.add("failed");
      card.querySelector(".status").textContent = "error";
      card.querySelector(".detail").textContent = error.message;
    }
  }));
}

function init() {
  $("#token").value = localStorage.getItem("smartthumb-token") || "";
  $("#files").addEventListener("change", (event) => setPicked(event.target.files));
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    setPicked(event.dataTransfer.files);
  });
  $("#mode").addEventListener("change", () => {
    // pair picks its 16:9 canvas from the width alone.
    if ($("#mode").value === "pair") {
      $("#width").value = 1200;
      $("#height").value = "";
    }
  });
  $("#form").addEventListener("submit", submit);
}

init();
