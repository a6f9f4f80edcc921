// Renders a transcription result: one block per speaker turn, each speaker its own colour,
// each timed word a button that plays the audio from that word.

// The stylesheet defines this many speaker colours (.speaker-0 ...); more speakers reuse them,
// still told apart by their labels.
const SPEAKER_COLOURS = 8;

// A length as people say it: 2:13, or 1:02:05 (whole seconds).
export function length(seconds) {
  const total = Math.round(Math.max(0, seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = String(total % 60).padStart(2, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${minutes}:${rest}`;
}

export function clock(seconds) {
  const total = Math.max(0, seconds);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = (total % 60).toFixed(1).padStart(4, "0");
  const mm = String(minutes).padStart(2, "0");
  return hours ? `${hours}:${mm}:${rest}` : `${mm}:${rest}`;
}

// Consecutive segments of the same speaker make one turn.
function turns(segments) {
  const result = [];
  for (const segment of segments) {
    const last = result.at(-1);
    if (last && last.speaker === segment.speaker) {
      last.end = segment.end;
      last.segments.push(segment);
    } else {
      result.push({ speaker: segment.speaker, start: segment.start, end: segment.end, segments: [segment] });
    }
  }
  return result;
}

function speakerClass(speaker, speakers) {
  if (!speaker) return "speaker-none";
  return `speaker-${speakers.indexOf(speaker) % SPEAKER_COLOURS}`;
}

function wordElement(word) {
  if (word.start === null || word.start === undefined) {
    const span = document.createElement("span");
    span.className = "word";
    span.textContent = word.word;
    return span;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "word";
  button.dataset.start = String(word.start);
  button.title = `Play from ${clock(word.start)}`;
  button.textContent = word.word;
  return button;
}

function segmentWords(segment, paragraph) {
  // A segment without word timings still shows its text.
  if (!segment.words.length) {
    paragraph.append(segment.text.trim(), " ");
    return;
  }
  for (const word of segment.words) paragraph.append(wordElement(word), " ");
}

// One speaker's turn: a heading with the speaker and the times, and an empty paragraph for its text.
export function turnBlock(speaker, speakers, start, end) {
  const block = document.createElement("article");
  block.className = `turn ${speakerClass(speaker, speakers)}`;
  const heading = document.createElement("header");
  const label = document.createElement("span");
  label.className = "speaker";
  label.textContent = speaker ?? "Speaker unknown";
  const time = document.createElement("time");
  time.textContent = `${clock(start)} – ${clock(end)}`;
  heading.append(label, time);
  const paragraph = document.createElement("p");
  block.append(heading, paragraph);
  return { block, paragraph };
}

export function renderTranscript(container, result) {
  const speakers = [...new Set(result.segments.map((s) => s.speaker).filter(Boolean))].sort();
  const blocks = turns(result.segments).map((turn) => {
    const { block, paragraph } = turnBlock(turn.speaker, speakers, turn.start, turn.end);
    for (const segment of turn.segments) segmentWords(segment, paragraph);
    return block;
  });
  if (!blocks.length) {
    const empty = document.createElement("p");
    empty.className = "hint";
    empty.textContent = "No speech was found in this file.";
    blocks.push(empty);
  }
  container.replaceChildren(...blocks);
}
