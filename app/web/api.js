// Calls to the service: every one sends the key in the X-API-Key header, never in a URL.

const KEY_STORAGE = "whisperx-api-key";

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE) ?? "";
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

// An API error, worded as the service worded it (the problem document's `detail`).
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function problemMessage(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
  } catch {
    // Not JSON (a proxy's error page, say): fall through to the status line.
  }
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

// fetch() with the key; throws ApiError for a non-2xx answer, and a readable Error when the
// server could not be reached.
export async function apiFetch(path, options = {}) {
  const headers = new Headers(options.headers);
  // Without a key the API answers that it is missing, which says more than "invalid".
  if (storedKey()) headers.set("X-API-Key", storedKey());
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Error(`Could not reach the server (${error.message}). Check that it is running and try again.`);
  }
  if (!response.ok) throw new ApiError(response.status, await problemMessage(response));
  return response;
}

export async function apiJson(path, options) {
  return (await apiFetch(path, options)).json();
}

// Splits a Server-Sent Events stream into {event, data} records (the WHATWG event-stream
// format). EventSource cannot send headers, so the stream is read with fetch().
export async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let carriage = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // A "\r\n" split over two chunks must not count as two line ends.
    let text = carriage + value;
    carriage = text.endsWith("\r") ? "\r" : "";
    if (carriage) text = text.slice(0, -1);
    buffer += text.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const record = parseRecord(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (record) yield record;
    }
  }
}

function parseRecord(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue; // comments are keep-alive pings
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}
