// Live transcription from the microphone: audio over /v1/realtime (OpenAI's Realtime protocol),
// partial text as the person speaks, each finished utterance as a line with its speaker, and the
// finished lines as TXT, SRT or VTT, made here: the server keeps nothing of a live session.

import { apiFetch, storedKey } from "./api.js";
import { turnBlock } from "./transcript.js";

const RATE = 24000; // the only input rate the endpoint takes (24 kHz mono 16-bit PCM)
// Browsers cannot set headers on a WebSocket: the key travels as this subprotocol, as OpenAI's
// browser clients send it; never in the URL.
const KEY_SUBPROTOCOL = "openai-insecure-api-key.";
// A subprotocol is an HTTP token: a key with other characters cannot be sent this way.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// After Stop, how long the server may take to finish the last utterance.
const FINISH_SECONDS = 60;
const COMMIT_EMPTY = "input_audio_buffer_commit_empty";

const $ = (selector) => document.querySelector(selector);
const button = $("#mic-button");
const status = $("#live-status");
const lines = $("#live-transcript");
const partial = $("#live-partial");

let ui = null; // {showError, clearError} from the page
let session = null; // the session being recorded or finished
let finals = []; // [{speaker, start, end, text}] of the last session, in the order spoken
let startedAt = null; // when the last session began, for the downloads' names

// Why this page cannot record here, or null.
function unsupported() {
  if (!window.isSecureContext) {
    return "Browsers allow the microphone only on HTTPS or on localhost: open this page through the " +
      "server's HTTPS address, or as http://localhost on the machine that runs it.";
  }
  if (!navigator.mediaDevices?.getUserMedia || !window.AudioWorkletNode) {
    return "This browser cannot record audio for live transcription (it lacks getUserMedia or AudioWorklet).";
  }
  return null;
}

function setState(state) {
  button.dataset.state = state;
  button.setAttribute("aria-pressed", String(state === "recording"));
  button.disabled = state === "finishing";
  button.textContent = { idle: "Start microphone", connecting: "Cancel", recording: "Stop",
                         finishing: "Finishing…" }[state];
  status.textContent = { idle: "", connecting: "Connecting…", recording: "Listening…",
                         finishing: "Transcribing the last words…" }[state];
  $("#live-downloads").hidden = state !== "idle" || !finals.length;
}

// --- the transcript --------------------------------------------------------------------------

function addLine(line) {
  finals.push(line);
  // Colours in the order the voices were first heard.
  const speakers = [...new Set(finals.map((final) => final.speaker).filter(Boolean))];
  const { block, paragraph } = turnBlock(line.speaker, speakers, line.start, line.end);
  paragraph.textContent = line.text;
  lines.append(block);
}

function showPartial() {
  const open = [...(session?.items.values() ?? [])].filter((item) => item.text);
  partial.textContent = open.map((item) => `${item.text}…`).join(" ");
  partial.hidden = !open.length;
}

// --- downloads, made from the final lines ----------------------------------------------------

function stamp(seconds, marker) {
  const millis = Math.round(Math.max(0, seconds) * 1000);
  const pad = (value, width = 2) => String(value).padStart(width, "0");
  const hours = Math.floor(millis / 3_600_000);
  const minutes = Math.floor(millis / 60_000) % 60;
  const secs = Math.floor(millis / 1000) % 60;
  return `${pad(hours)}:${pad(minutes)}:${pad(secs)}${marker}${pad(millis % 1000, 3)}`;
}

// "-->" separates cue times; inside a cue's text it would break parsers (as in the server's exports).
const cueSafe = (text) => text.replaceAll("-->", "->");
const vttEscape = (text) => text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
const labelled = (line) => (line.speaker ? `[${line.speaker}]: ${line.text}` : line.text);

// One line (TXT) or one cue (SRT, VTT) per utterance, with its speaker as the server's exports show it.
export function liveExport(lines, format) {
  if (format === "txt") return lines.map((line) => `${labelled(line)}\n`).join("");
  if (format === "srt") {
    return lines.map((line, index) =>
      `${index + 1}\n${stamp(line.start, ",")} --> ${stamp(line.end, ",")}\n${cueSafe(labelled(line))}\n\n`).join("");
  }
  const cues = lines.map((line) => {
    const text = vttEscape(cueSafe(line.text));
    const voice = line.speaker ? `<v ${vttEscape(line.speaker)}>${text}` : text;
    return `${stamp(line.start, ".")} --> ${stamp(line.end, ".")}\n${voice}\n\n`;
  });
  return `WEBVTT\n\n${cues.join("")}`;
}

function download(format) {
  const types = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt" };
  const blob = new Blob([liveExport(finals, format)], { type: `${types[format]};charset=utf-8` });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  const when = startedAt.toISOString().slice(0, 16).replace("T", "-").replace(":", "");
  link.download = `live-${when}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// --- the session -----------------------------------------------------------------------------

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let start = 0; start < bytes.length; start += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
  }
  return btoa(binary);
}

function send(event) {
  if (session?.socket.readyState === WebSocket.OPEN) session.socket.send(JSON.stringify(event));
}

function sendSessionUpdate() {
  send({
    type: "session.update",
    session: {
      type: "transcription",
      audio: { input: { format: { type: "audio/pcm", rate: RATE }, turn_detection: { type: "server_vad" } } },
      // Speakers whose voices the key has remembered are named (this server's extension).
      identify_speakers: true,
    },
  });
  session.updatesSent += 1;
}

async function startAudio(mine) {
  await mine.context.audioWorklet.addModule("/static/pcm-worklet.js");
  if (session !== mine || mine.state !== "recording") return; // stopped meanwhile
  const node = new AudioWorkletNode(mine.context, "pcm-resampler", { numberOfInputs: 1, numberOfOutputs: 0 });
  node.port.onmessage = ({ data }) => {
    if (session !== mine || mine.state !== "recording") return;
    mine.samplesSent += data.byteLength / 2;
    send({ type: "input_audio_buffer.append", audio: base64(data) });
  };
  mine.context.createMediaStreamSource(mine.stream).connect(node);
  mine.node = node;
}

function stopAudio(current) {
  current.node?.port.close();
  for (const track of current.stream.getTracks()) track.stop();
  current.context.close().catch(() => {}); // already closed: nothing to do
}

function end(message) {
  const current = session;
  if (!current) return;
  session = null;
  clearTimeout(current.finishTimer);
  stopAudio(current);
  if (current.socket.readyState <= WebSocket.OPEN) current.socket.close(1000);
  partial.hidden = true;
  setState("idle");
  if (message) ui.showError(message);
}

function onEvent(event) {
  const items = session.items;
  switch (event.type) {
    case "session.created":
      sendSessionUpdate();
      session.state = "recording";
      setState("recording");
      startAudio(session).catch((error) => {
        if (session?.state === "recording") end(`Could not start recording: ${error.message}`);
      });
      break;
    case "session.updated":
      session.updatesAnswered += 1;
      // The update sent after Stop is answered once everything before it is done.
      if (session.state === "finishing" && session.updatesAnswered === session.updatesSent) end();
      break;
    case "input_audio_buffer.speech_started":
      items.set(event.item_id, { start: event.audio_start_ms / 1000, end: null, text: "" });
      break;
    case "input_audio_buffer.speech_stopped":
      if (items.has(event.item_id)) items.get(event.item_id).end = event.audio_end_ms / 1000;
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const item = items.get(event.item_id) ?? { start: 0, end: null, text: "" };
      item.text += event.delta;
      items.set(event.item_id, item);
      showPartial();
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const item = items.get(event.item_id) ?? { start: 0, end: null };
      items.delete(event.item_id);
      const text = event.transcript.trim();
      const endAt = item.end ?? session.samplesSent / RATE;
      if (text) addLine({ speaker: event.speaker ?? null, start: item.start, end: endAt, text });
      showPartial();
      break;
    }
    case "error":
      // A Stop with nothing left to commit; anything else ends the session.
      if (event.error.code !== COMMIT_EMPTY) end(`Live transcription stopped: ${event.error.message}`);
      break;
    default:
      break;
  }
}

async function start() {
  ui.clearError();
  const key = storedKey();
  if (!key) throw new Error("Enter an API key first.");
  if (!TOKEN.test(key)) {
    throw new Error("This key has characters a browser cannot send on a WebSocket (the key goes as a " +
      "subprotocol): live transcription from the page needs a key of letters, digits and -._~ only.");
  }
  setState("connecting");
  try {
    // A refused WebSocket tells the page nothing of why: a wrong key is told here, in the API's words.
    await apiFetch("/health");
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    const context = new AudioContext();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/v1/realtime?intent=transcription`,
                                 ["realtime", `${KEY_SUBPROTOCOL}${key}`]);
    finals = [];
    lines.replaceChildren();
    startedAt = new Date();
    session = { socket, stream, context, node: null, state: "connecting", items: new Map(),
                samplesSent: 0, updatesSent: 0, updatesAnswered: 0, finishTimer: null, opened: false };
    const mine = session;
    socket.onopen = () => { mine.opened = true; };
    socket.onmessage = (message) => { if (session === mine) onEvent(JSON.parse(message.data)); };
    socket.onclose = (closed) => {
      if (session !== mine) return;
      end(mine.opened
        ? `The live session ended (${closed.code}${closed.reason ? `: ${closed.reason}` : ""}).`
        : "The server refused the live session or could not be reached. A key may hold " +
          "MAX_LIVE_SESSIONS_PER_KEY sessions at once (1 by default), the server MAX_LIVE_SESSIONS; live " +
          "transcription needs TASK_BACKEND=local.");
    };
  } catch (error) {
    if (session) end();
    else setState("idle");
    if (error.name === "NotAllowedError") throw new Error("The browser was not allowed to use the microphone.");
    if (error.name === "NotFoundError") throw new Error("The browser found no microphone.");
    throw error;
  }
}

// Stop: no more audio; the utterance under way is committed, and a session.update sent after it
// is answered only once the server has finished everything before it.
function stop() {
  if (session.state !== "recording") {
    end();
    return;
  }
  session.state = "finishing";
  setState("finishing");
  stopAudio(session);
  send({ type: "input_audio_buffer.commit" });
  sendSessionUpdate();
  session.finishTimer = setTimeout(
    () => end(`The server did not finish the last words within ${FINISH_SECONDS} s; the transcript keeps what came.`),
    FINISH_SECONDS * 1000,
  );
}

export function setUpLive(page) {
  ui = page;
  const reason = unsupported();
  if (reason) {
    $("#mic-note").textContent = reason;
    $("#mic-note").hidden = false;
    button.disabled = true;
    return;
  }
  setState("idle");
  button.addEventListener("click", () => {
    if (session) stop();
    else if (button.dataset.state === "connecting") return; // the key and the microphone are being checked
    else start().catch((error) => ui.showError(error.message));
  });
  for (const format of document.querySelectorAll("[data-live-format]")) {
    format.addEventListener("click", () => download(format.dataset.liveFormat));
  }
}
