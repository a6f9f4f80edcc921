"""One live transcription session: audio in, speech turns found, partial and final text with speakers out.

The receiving side (`take`) only queues what the client sent, with the audio still waiting bounded
(MAX_PENDING_SECONDS): a client may send faster than real time as long as the session keeps up, and
one that outpaces it gets an `error` event and a close, the server's memory flat. The processing
side (`run`) takes the queue in order: speech probability per 32-ms window, turns by the session's
server VAD (or the client's commits), partial text about every PARTIAL_SECONDS while someone speaks,
and on each turn's end the final text and its speaker. Model calls go to the live worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from app.live.engine import VAD_WINDOW
from app.live.protocol import (
    INPUT_RATE,
    Append,
    Clear,
    ClientEvent,
    Commit,
    LiveConfig,
    Update,
    new_id,
    server_event,
    session_document,
)
from app.live.speakers import SpeakerTracker

logger = logging.getLogger(__name__)

RATE = 16000
PARTIAL_SECONDS = 0.6
"""Speech between partial transcriptions of the turn so far."""
MAX_TURN_SECONDS = 30.0
"""A turn is ended here even without a pause: Whisper reads 30 s at most."""
MAX_PENDING_SECONDS = 30.0
"""Audio received but not yet processed; beyond it the client is sending faster than the session keeps up."""

Call = Callable[..., Awaitable[Any]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class SessionEnded(Exception):
    """The session must end; `code` and the message go into a last `error` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def to_16k(pcm: bytes) -> np.ndarray:
    """24 kHz 16-bit PCM as 16 kHz float samples."""
    from scipy.signal import resample_poly

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return np.asarray(resample_poly(samples, 2, 3), dtype=np.float32)


class LiveSession:
    def __init__(self, call: Call, send: Send, enrolled: Sequence[Mapping[str, Any]] = ()) -> None:
        self.id = new_id("sess")
        self.config = LiveConfig()
        self._call = call
        self._send = send
        self._queue: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self._pending_bytes = 0
        self._speakers = SpeakerTracker(enrolled)
        self._leftover = np.zeros(0, dtype=np.float32)  # samples short of a whole VAD window
        self._recent = np.zeros(0, dtype=np.float32)  # the prefix padding kept before speech
        self._turn: list[np.ndarray] = []
        self._turn_samples = 0
        self._item: str | None = None
        self._speaking = False
        self._silence_ms = 0.0
        self._processed = 0  # samples of the stream processed: the session's clock
        self._partial_at = 0  # turn samples at the last partial
        self._sent_words: list[str] = []  # what the deltas of the current turn have said
        self._previous_item: str | None = None
        self._working = False

    def take(self, event: ClientEvent) -> None:
        """Queue a client event; SessionEnded when the audio waiting would pass MAX_PENDING_SECONDS."""
        if isinstance(event, Append):
            self._pending_bytes += len(event.pcm)
            if self._pending_bytes > MAX_PENDING_SECONDS * INPUT_RATE * 2:
                raise SessionEnded(
                    "input_audio_buffer_overflow",
                    f"Audio is arriving faster than it can be transcribed (over {MAX_PENDING_SECONDS:g} s waiting); "
                    "send it at real-time pace",
                )
        if isinstance(event, Update):  # checked against the config as it will be when it is applied
            self.config = event.config
        self._queue.put_nowait(event)

    @property
    def idle(self) -> bool:
        """Nothing received is left to process: the client's silence counts from here."""
        return self._queue.empty() and not self._working

    async def run(self) -> None:
        """Process the client's events in order, for good; raises what ends the session."""
        while True:
            event = await self._queue.get()
            self._working = True
            try:
                await self._handle(event)
            finally:
                self._working = False

    async def _handle(self, event: ClientEvent) -> None:
        match event:
            case Append(pcm):
                self._pending_bytes -= len(pcm)
                await self._audio(to_16k(pcm))
            case Commit():
                await self._commit()
            case Clear():
                self._reset_turn()
                self._leftover = self._recent = np.zeros(0, dtype=np.float32)
                await self._send(server_event("input_audio_buffer.cleared"))
            case Update(config, beta):
                self._apply(config)
                kind = "transcription_session.updated" if beta else "session.updated"
                await self._send(server_event(kind, session=session_document(self.id, config)))

    def _apply(self, config: LiveConfig) -> None:
        if config.turn_detection is None and self._speaking:
            self._speaking = False  # what was heard stays in the buffer for the client's commit
        self.config = config

    async def _audio(self, samples: np.ndarray) -> None:
        vad = self.config.turn_detection
        if vad is None:  # the client commits: everything goes into the buffer
            self._processed += len(samples)
            self._add(samples)
            await self._maybe_partial()
            return
        samples = np.concatenate([self._leftover, samples])
        whole = len(samples) // VAD_WINDOW * VAD_WINDOW
        self._leftover = samples[whole:]
        if not whole:
            return
        probabilities = await self._call("speech_probabilities", samples[:whole])
        window_ms = VAD_WINDOW * 1000 / RATE
        prefix = round(vad.prefix_padding_ms * RATE / 1000)
        for index, probability in enumerate(probabilities):
            window = samples[index * VAD_WINDOW : (index + 1) * VAD_WINDOW]
            self._processed += VAD_WINDOW
            now_ms = round(self._processed * 1000 / RATE)
            if not self._speaking:
                self._recent = np.concatenate([self._recent, window])[-max(prefix, VAD_WINDOW) :]
                if probability >= vad.threshold:
                    self._speaking, self._silence_ms = True, 0.0
                    self._start_item()
                    self._add(self._recent)
                    start_ms = max(0, now_ms - round(len(self._recent) * 1000 / RATE))
                    await self._send(
                        server_event("input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=self._item)
                    )
                continue
            self._add(window)
            self._silence_ms = self._silence_ms + window_ms if probability < vad.threshold else 0.0
            if self._silence_ms >= vad.silence_duration_ms or self._turn_samples >= MAX_TURN_SECONDS * RATE:
                self._speaking = False
                self._recent = np.zeros(0, dtype=np.float32)
                await self._send(
                    server_event("input_audio_buffer.speech_stopped", audio_end_ms=now_ms, item_id=self._item)
                )
                await self._commit()
        if self._speaking:
            await self._maybe_partial()

    def _start_item(self) -> None:
        if self._item is None:
            self._item = new_id("item")

    def _add(self, samples: np.ndarray) -> None:
        self._start_item()
        self._turn.append(samples)
        self._turn_samples += len(samples)

    def _reset_turn(self) -> None:
        self._turn, self._turn_samples, self._partial_at = [], 0, 0
        self._item, self._sent_words, self._speaking, self._silence_ms = None, [], False, 0.0

    async def _maybe_partial(self) -> None:
        """Partial text of the turn so far; deltas only append, so only words that extend what was sent go out."""
        if self._turn_samples - self._partial_at < PARTIAL_SECONDS * RATE:
            return
        if self._pending_bytes > PARTIAL_SECONDS * INPUT_RATE * 2:
            # Behind the speaker: a partial now would be stale when sent and delay the audio behind
            # it (each call encodes a whole 30-s window). Read the waiting audio first; finals come sooner.
            return
        self._partial_at = self._turn_samples
        text = await self._call(
            "transcribe", np.concatenate(self._turn), self.config.language, self.config.prompt, False
        )
        words = text.split()[:-1]  # the last word may be cut off mid-way: it waits for more audio
        if words[: len(self._sent_words)] != self._sent_words or len(words) <= len(self._sent_words):
            return
        delta = " ".join(words[len(self._sent_words) :])
        await self._send(
            server_event(
                "conversation.item.input_audio_transcription.delta",
                item_id=self._item, content_index=0, delta=(" " if self._sent_words else "") + delta,
            )
        )  # fmt: skip
        self._sent_words = words

    async def _commit(self) -> None:
        if not self._turn_samples:
            await self._send(
                server_event(
                    "error",
                    error={"type": "invalid_request_error", "code": "input_audio_buffer_commit_empty",
                           "message": "The input audio buffer is empty: nothing to commit", "param": None},
                )
            )  # fmt: skip
            return
        audio = np.concatenate(self._turn)
        item = self._item
        await self._send(
            server_event("input_audio_buffer.committed", item_id=item, previous_item_id=self._previous_item)
        )
        self._previous_item = item
        sent = self._sent_words
        self._reset_turn()
        text = await self._call("transcribe", audio, self.config.language, self.config.prompt, True)
        speaker = self._speakers.assign(await self._call("embed", audio), self.config.identify_speakers)
        if sent and text.split()[: len(sent)] != sent:
            logger.debug("The final text of %s revised its partial text", item)
        await self._send(
            server_event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item, content_index=0, transcript=text, speaker=speaker,
                usage={"type": "duration", "seconds": round(len(audio) / RATE, 3)},
            )
        )  # fmt: skip
