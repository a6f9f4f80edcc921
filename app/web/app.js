// The page: key, upload, live progress per task, transcript with playback, downloads; the
// microphone's live transcription is live.js.

import { ApiError, apiFetch, apiJson, serverSentEvents, storeKey, storedKey } from "./api.js";
import { setUpLive } from "./live.js";
import { length, renderTranscript } from "./transcript.js";

const API = "/api/v1/transcribe";
const TERMINAL = new Set(["completed", "failed"]);

const $ = (selector) => document.querySelector(selector);
const errorBox = $("#error");
const fileInput = $("#file");
const player = $("#player");

const tasks = new Map(); // task id -> latest summary or event
const localFiles = new Map(); // task id -> {name, url}: files uploaded from this tab, for playback
const following = new Map(); // task id -> AbortController of its event stream
let selectedFile = null;
let openAfterUpload = null;
let openTask = null;

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

// Runs an action, showing whatever went wrong: nothing fails silently.
async function guarded(action) {
  try {
    await action();
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The estimate counts down between events (a long step sends none); once it has run out, the
// page shows none rather than "about 1 s left" for a step that is taking longer.
function eta(task) {
  if (task.eta_until === undefined || task.eta_until === null) return "";
  const seconds = (task.eta_until - Date.now()) / 1000;
  if (seconds <= 0) return "";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}

// --- task list -------------------------------------------------------------------------------

// The uploaded file's name, as this tab chose it or as the server kept it.
function taskName(id) {
  return localFiles.get(id)?.name ?? tasks.get(id)?.file_name ?? `Task ${id.slice(0, 8)}`;
}

function progressText(task) {
  if (task.status === "failed") return task.error ?? task.message;
  const parts = [task.message];
  if (task.status === "processing") parts.push(`${task.progress.toFixed(0)}%`, eta(task));
  return parts.filter(Boolean).join(" · ");
}

// A completed task whose result carries warnings (or notes) is marked in the list, its words in the tooltip.
function remarkMark(task) {
  const warnings = task.warnings ?? [];
  const notes = task.notes ?? [];
  if (!warnings.length && !notes.length) return null;
  const mark = document.createElement("span");
  mark.className = "remark-mark";
  const count = warnings.length || notes.length;
  const kind = warnings.length ? "warning" : "note";
  mark.textContent = `${warnings.length ? "⚠ " : ""}${count} ${kind}${count === 1 ? "" : "s"}`;
  mark.title = [...warnings, ...notes].join("\n");
  return mark;
}

function taskRow(id) {
  const task = tasks.get(id);
  const row = document.createElement("li");
  row.className = `task status-${task.status}`;
  row.dataset.taskId = id;

  const title = document.createElement("div");
  title.className = "task-title";
  const name = document.createElement("span");
  name.className = "task-name";
  name.textContent = taskName(id);
  if (task.duration) {
    const audio = document.createElement("span");
    audio.className = "task-length";
    audio.textContent = length(task.duration);
    name.append(" ", audio);
  }
  const status = document.createElement("span");
  status.className = "badge";
  status.textContent = task.stage && task.status === "processing" ? task.stage : task.status;
  const mark = remarkMark(task);
  title.append(name, ...(mark ? [mark] : []), status);

  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = task.progress;
  bar.setAttribute("aria-label", `Progress of ${taskName(id)}`);

  const text = document.createElement("p");
  text.className = "task-text";
  text.textContent = progressText(task);

  const actions = document.createElement("div");
  actions.className = "task-actions";
  if (task.status === "completed") {
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = "Open";
    open.addEventListener("click", () => guarded(() => showResult(id)));
    actions.append(open);
  }
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "secondary";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete ${taskName(id)}`);
  remove.addEventListener("click", () => guarded(() => deleteTask(id)));
  actions.append(remove);

  row.append(title, bar, text, actions);
  return row;
}

function renderTasks() {
  const list = $("#tasks");
  const ordered = [...tasks.values()].sort((a, b) => (b.created_at ?? "").localeCompare(a.created_at ?? ""));
  list.replaceChildren(...ordered.map((task) => taskRow(task.task_id)));
  $("#tasks-empty").hidden = tasks.size > 0;
}

function renderTask(id) {
  const old = document.querySelector(`#tasks li[data-task-id="${CSS.escape(id)}"]`);
  if (old) old.replaceWith(taskRow(id));
  else renderTasks();
}

async function refreshTasks() {
  const page = await apiJson(`${API}/tasks?limit=100`);
  tasks.clear();
  for (const task of page.tasks) tasks.set(task.task_id, task);
  // Another key's tasks (the key was changed) are no longer followed or shown.
  for (const [id, controller] of following) if (!tasks.has(id)) controller.abort();
  if (openTask && !tasks.has(openTask)) closeResult();
  renderTasks();
  for (const task of page.tasks) if (!TERMINAL.has(task.status)) follow(task.task_id);
}

function forget(id) {
  following.get(id)?.abort();
  tasks.delete(id);
  const local = localFiles.get(id);
  if (local) URL.revokeObjectURL(local.url);
  localFiles.delete(id);
  if (openTask === id) closeResult();
  renderTasks();
}

async function deleteTask(id) {
  try {
    await apiFetch(`${API}/task/${encodeURIComponent(id)}`, { method: "DELETE" });
  } finally {
    // Gone either way: deleted now, or already (404).
    forget(id);
  }
}

// --- live progress ---------------------------------------------------------------------------

function onUpdate(id, update) {
  const etaUntil = update.eta_seconds === null || update.eta_seconds === undefined
    ? null : Date.now() + update.eta_seconds * 1000;
  tasks.set(id, { ...tasks.get(id), ...update, eta_until: etaUntil });
  renderTask(id);
  if (update.status === "failed" && openAfterUpload === id) showError(update.error ?? update.message);
  if (update.status === "completed" && openAfterUpload === id) {
    openAfterUpload = null;
    guarded(() => showResult(id));
  }
}

// Each second, the running tasks' lines show the estimate counted down.
setInterval(() => {
  for (const row of document.querySelectorAll("#tasks li.status-processing")) {
    const task = tasks.get(row.dataset.taskId);
    if (task) row.querySelector(".task-text").textContent = progressText(task);
  }
}, 1000);

// Follows a task's event stream until it ends; reconnects when the connection drops.
async function follow(id) {
  if (following.has(id)) return;
  const controller = new AbortController();
  following.set(id, controller);
  try {
    for (let failures = 0; failures < 5; failures += 1) {
      try {
        const response = await apiFetch(`${API}/events/${encodeURIComponent(id)}`, {
          headers: { Accept: "text/event-stream" },
          signal: controller.signal,
        });
        for await (const { event, data } of serverSentEvents(response)) {
          failures = 0;
          if (event === "deleted") {
            forget(id);
            return;
          }
          onUpdate(id, JSON.parse(data));
          if (TERMINAL.has(event)) return;
        }
      } catch (error) {
        if (error.name === "AbortError") return;
        if (error instanceof ApiError) {
          if (error.status === 404) forget(id);
          else showError(error.message);
          return;
        }
      }
      await sleep(1000 * (failures + 1));
    }
    showError(`Lost the progress stream of ${taskName(id)}; press Refresh to see where it stands.`);
  } finally {
    following.delete(id);
  }
}

// --- upload ----------------------------------------------------------------------------------

function chooseFile(file) {
  selectedFile = file ?? null;
  $("#file-name").textContent = selectedFile ? selectedFile.name : "No file chosen";
}

async function upload(event) {
  event.preventDefault();
  clearError();
  if (!selectedFile) {
    showError("Choose an audio or video file first.");
    return;
  }
  const form = new FormData();
  form.append("file", selectedFile, selectedFile.name);
  const language = $("#language").value;
  if (language) form.append("language", language);
  const diarize = $("#diarization").checked;
  form.append("enable_diarization", String(diarize));
  for (const [field, input] of [["min_speakers", "#min-speakers"], ["max_speakers", "#max-speakers"]]) {
    const value = $(input).value.trim();
    if (diarize && value) form.append(field, value);
  }
  if (diarize && $("#identify-speakers").checked) form.append("identify_speakers", "true");
  const button = $("#upload-button");
  button.disabled = true;
  button.textContent = "Uploading…";
  try {
    const accepted = await apiJson(`${API}/upload`, { method: "POST", body: form });
    const id = accepted.task_id;
    localFiles.set(id, { name: selectedFile.name, url: URL.createObjectURL(selectedFile) });
    tasks.set(id, { task_id: id, status: accepted.status, progress: 0, message: accepted.message,
                    created_at: new Date().toISOString() });
    openAfterUpload = id;
    renderTasks();
    follow(id);
  } finally {
    button.disabled = false;
    button.textContent = "Transcribe";
  }
}

// --- result ----------------------------------------------------------------------------------

function closeResult() {
  openTask = null;
  $("#result").hidden = true;
  player.removeAttribute("src");
  player.load();
}

async function showResult(id) {
  clearError();
  const result = await apiJson(`${API}/result/${encodeURIComponent(id)}`);
  openTask = id;
  renderTranscript($("#transcript"), result);
  const speakers = new Set(result.segments.map((segment) => segment.speaker).filter(Boolean)).size;
  const duration = tasks.get(id)?.duration ?? result.segments.at(-1)?.end ?? 0;
  $("#result-heading").textContent = `Transcript of ${taskName(id)}`;
  $("#result-meta").textContent = [
    result.language ? `Language: ${result.language}` : "no speech found",
    `length ${length(duration)}`,
    speakers ? `${speakers} speaker${speakers === 1 ? "" : "s"}` : "no speaker labels",
  ].join(" · ");
  renderRemarks(result);
  renderSpeakers(id, result);
  const local = localFiles.get(id);
  if (local) player.src = local.url;
  else player.removeAttribute("src");
  player.hidden = !local;
  $("#player-note").hidden = Boolean(local);
  $("#result").hidden = false;
  $("#result").scrollIntoView({ behavior: "smooth", block: "start" });
}

// A banner above the transcript: its warnings first (the transcript may be incomplete or wrong),
// then its notes (what ran other than configured).
function renderRemarks(result) {
  const items = (texts) =>
    texts.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    });
  const warnings = result.warnings ?? [];
  const notes = result.notes ?? [];
  $("#result-warnings").replaceChildren(...items(warnings.map((text) => `Warning: ${text}`)));
  $("#result-notes").replaceChildren(...items(notes.map((text) => `Note: ${text}`)));
  $("#result-remarks").hidden = !warnings.length && !notes.length;
}

// --- speaker names ---------------------------------------------------------------------------

// One row per speaker: a name field that renames it on the server, and "Remember voice", which
// enrols the voice so that later transcripts (with "Name the voices…" ticked) carry the name.
function renderSpeakers(id, result) {
  const rows = (result.speakers ?? []).map((entry) => {
    const row = document.createElement("li");
    const name = document.createElement("input");
    name.value = entry.speaker;
    name.maxLength = 100;
    name.setAttribute("aria-label", `Name of ${entry.speaker}`);
    const rename = document.createElement("button");
    rename.type = "button";
    rename.className = "secondary";
    rename.textContent = "Rename";
    rename.addEventListener("click", () => guarded(() => renameSpeaker(id, entry.speaker, name.value.trim())));
    const remember = document.createElement("button");
    remember.type = "button";
    remember.className = "secondary";
    remember.textContent = "Remember voice";
    remember.addEventListener("click", () => guarded(() => rememberVoice(id, entry.speaker, remember)));
    row.append(name, rename, remember);
    if (entry.match) {
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `closest voice: ${entry.match} (${entry.score.toFixed(2)})`;
      row.append(score);
    }
    return row;
  });
  $("#speaker-list").replaceChildren(...rows);
  $("#speaker-names").hidden = !rows.length;
}

async function renameSpeaker(id, speaker, name) {
  clearError();
  if (!name || name === speaker) return;
  await apiJson(`${API}/tasks/${encodeURIComponent(id)}/speakers`, {
    method: "PATCH",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ [speaker]: name }),
  });
  await showResult(id);
}

async function rememberVoice(id, speaker, button) {
  clearError();
  const form = new FormData();
  form.append("name", speaker);
  form.append("task_id", id);
  form.append("speaker", speaker);
  await apiJson("/api/v1/speakers", { method: "POST", body: form });
  button.textContent = "Voice remembered";
  button.disabled = true;
}

// Marks the word being played, so the listener can follow along.
function markPlaying() {
  const now = player.currentTime;
  let playing = null;
  for (const word of document.querySelectorAll("#transcript button.word")) {
    if (Number(word.dataset.start) > now) break;
    playing = word;
  }
  const previous = document.querySelector("#transcript .playing");
  if (previous === playing) return;
  previous?.classList.remove("playing");
  playing?.classList.add("playing");
}

function playFrom(event) {
  const word = event.target.closest("button.word");
  if (!word || !player.src) return;
  player.currentTime = Number(word.dataset.start);
  player.play().catch((error) => showError(`The browser could not play this file: ${error.message}`));
}

async function download(format) {
  const id = openTask;
  const response = await apiFetch(`${API}/result/${encodeURIComponent(id)}?format=${format}`);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = `${taskName(id).replace(/\.[^.]*$/, "")}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  // The browser has started the download by now; the blob may go a little later.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// --- wiring ----------------------------------------------------------------------------------

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  clearError();
  storeKey($("#api-key").value.trim());
  guarded(refreshTasks);
});
$("#upload-form").addEventListener("submit", (event) => guarded(() => upload(event)));
$("#refresh").addEventListener("click", () => {
  clearError();
  guarded(refreshTasks);
});
fileInput.addEventListener("change", () => chooseFile(fileInput.files[0]));
$("#diarization").addEventListener("change", (event) => {
  for (const input of ["#min-speakers", "#max-speakers", "#identify-speakers"]) {
    $(input).disabled = !event.target.checked;
  }
});

// A file dropped beside the zone must not make the browser leave the page.
for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
const dropZone = $("#drop-zone");
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  chooseFile(event.dataTransfer.files[0]);
});

$("#transcript").addEventListener("click", playFrom);
player.addEventListener("timeupdate", markPlaying);
for (const button of document.querySelectorAll("[data-format]")) {
  button.addEventListener("click", () => guarded(() => download(button.dataset.format)));
}

setUpLive({ showError, clearError });

if (storedKey()) {
  $("#api-key").value = storedKey();
  guarded(refreshTasks);
}
