"""Enrolled voices (`/api/v1/speakers`) and naming a task's speakers.

A voice belongs to the key that enrolled it: for any other key it does not exist (404), and
only the key's own voices are compared with its tasks' speakers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, HTTPException, Request, UploadFile, status

from app.api.deps import (
    CallerDep,
    OwnedTaskDep,
    SampleEmbedderDep,
    SettingsDep,
    StoreDep,
    VoiceStoreDep,
    not_found,
)
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.filenames import one_line
from app.api.schemas import TranscriptionResult, VoiceList, VoiceResponse, VoicesDeleted
from app.api.upload_body import SampleUploadRoute, before_body
from app.api.uploads import receive_upload
from app.config import Settings
from app.media import SUPPORTED_EXTENSIONS, MediaError
from app.tasks.async_store import AsyncTaskStore, AsyncVoiceStore
from app.tasks.models import Task, TaskStatus
from app.voices.enrollment import SampleEmbedder
from app.voices.errors import SampleError
from app.voices.matching import EMBEDDED_ENCODER, add_sample, rename_speakers
from app.voices.store import NameTaken, TooManyVoices, Voice

MAX_NAME_CHARS = 100
MAX_VOICES_PER_KEY = 200

router = APIRouter(prefix="/api/v1", tags=["speakers"], responses=UNAUTHORIZED, route_class=SampleUploadRoute)

_VOICE_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: problem_response("No voice with this id for this key")}
_SAMPLE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: problem_response("Malformed multipart body"),
    404: problem_response("No task (task_id) or voice with this id for this key"),
    409: problem_response("The task has not completed, or kept no speaker embeddings"),
    413: problem_response("Upload over MAX_UPLOAD_MB, or a sample over MAX_SAMPLE_SECONDS"),
    415: problem_response("Not a supported audio or video format"),
    422: problem_response("Too little speech in the sample, an unknown speaker label, or a field missing"),
    429: problem_response("The key has MAX_ENROLMENTS_PER_KEY enrolments in flight"),
}

FileField = Annotated[
    UploadFile | None,
    File(description=f"A recording of the voice alone, 3 s of speech or more: {', '.join(SUPPORTED_EXTENSIONS)}"),
]
TaskIdField = Annotated[
    str | None, Form(description="Instead of `file`: one of the key's completed tasks, with `speaker`")
]
SpeakerField = Annotated[
    str | None, Form(description="With `task_id`: the speaker's label (or name) in that task", examples=["SPEAKER_00"])
]


def _voice_response(voice: Voice) -> VoiceResponse:
    return VoiceResponse(
        id=voice.id, name=voice.name, samples=voice.samples, encoder=voice.encoder,
        created_at=voice.created_at, updated_at=voice.updated_at,
    )  # fmt: skip


def _voice_not_found(voice_id: str) -> HTTPException:
    return HTTPException(404, f"No voice with id {voice_id[:60]!r} for this API key; it may have been deleted.")


def _speaker_name(raw: str, field: str) -> str:
    """A name as transcripts will show it, on one line (no SRT cue or TSV row can hide in it); 422 when empty
    or too long."""
    name = one_line(raw)
    if not name or len(name) > MAX_NAME_CHARS:
        raise HTTPException(422, f"{field}: give a name of 1 to {MAX_NAME_CHARS} characters, on one line")
    return name


def _name_taken(existing: Voice) -> HTTPException:
    return HTTPException(
        409, f"name: this key already has a voice named {existing.name!r} (id {existing.id}); "
        f"add a sample to it with POST /api/v1/speakers/{existing.id}/samples, or choose another name"
    )  # fmt: skip


def _too_many_voices() -> HTTPException:
    return HTTPException(409, f"This key has {MAX_VOICES_PER_KEY} voices, the most it may have; delete some first")


async def _voice_exists(request: Request) -> None:
    """404 for a voice the caller does not have, before its sample is received."""
    voices: AsyncVoiceStore = request.app.state.voices
    voice_id: str = request.path_params["voice_id"]
    if await voices.get(request.state.api_key_id, voice_id) is None:
        raise _voice_not_found(voice_id)


def _task_speaker(task: Task, speaker: str) -> tuple[str, list[float]]:
    """The encoder and embedding of a speaker (label or name) of a completed task."""
    if task.status is not TaskStatus.COMPLETED or task.result is None:
        raise HTTPException(
            409, f"Task {task.id} is {task.status.value}; a voice can be taken only from a completed task."
        )
    prints = task.result.get("voiceprints")
    if not prints or not prints.get("speakers"):
        raise HTTPException(
            409, f"Task {task.id} kept no speaker embeddings (diarization was off, or no speaker had enough speech); "
            "enrol the voice from an audio sample (file) instead"
        )  # fmt: skip
    labels = {entry.get("label"): entry["speaker"] for entry in task.result.get("speakers") or []}
    name = speaker if speaker in prints["speakers"] else labels.get(speaker)
    if name not in prints["speakers"]:
        known = ", ".join(sorted(prints["speakers"]))
        raise HTTPException(422, f"speaker: task {task.id} has no speaker {speaker[:60]!r}; its speakers: {known}")
    return str(prints["encoder"]), list(prints["speakers"][name])


async def _sample(
    caller: str, settings: Settings, store: AsyncTaskStore, embedder: SampleEmbedder,
    file: UploadFile | None, task_id: str | None, speaker: str | None,
) -> tuple[str, list[float]]:  # fmt: skip
    """The encoder and embedding of a sample: an uploaded recording, or a speaker of a task."""
    if (file is None) == (task_id is None):
        raise HTTPException(
            422, "file: give either file (a recording of the voice) or task_id and speaker (a speaker of a task), "
            "not both" if file is not None else "file: give a recording of the voice as file, or task_id and speaker"
        )  # fmt: skip
    if task_id is not None:
        if not speaker:
            raise HTTPException(422, "speaker: give the speaker's label in the task, such as SPEAKER_00")
        task = await store.get(task_id)
        if task is None or task.owner != caller:  # another key's task answers like a missing one
            raise not_found(task_id)
        return _task_speaker(task, speaker)
    assert file is not None  # noqa: S101 - checked above
    path, info, _ = await receive_upload(file, settings)  # with a bucket, removed from it as the request ends
    try:
        if info.duration is not None and info.duration > settings.max_sample_seconds:
            raise HTTPException(
                413, f"file: the sample lasts {info.duration:.0f} s; this server takes samples of at most "
                f"{settings.max_sample_seconds:g} s (MAX_SAMPLE_SECONDS). A minute of the voice alone is enough: "
                "send a shorter one."
            )  # fmt: skip
        return EMBEDDED_ENCODER, await embedder.embed(path, caller)
    except SampleError as error:
        raise HTTPException(422, str(error)) from None
    except MediaError as error:
        raise HTTPException(422, f"file: {error}") from None
    finally:
        path.unlink(missing_ok=True)  # the audio is never kept: only its embedding


@router.post(
    "/speakers",
    status_code=status.HTTP_201_CREATED,
    response_model=VoiceResponse,
    responses=_SAMPLE_ERRORS,
    summary="Enrol a voice, from a recording or from a speaker of a task",
)
async def enrol(
    caller: CallerDep,
    settings: SettingsDep,
    store: StoreDep,
    voices: VoiceStoreDep,
    embedder: SampleEmbedderDep,
    name: Annotated[
        str,
        Form(min_length=1, max_length=MAX_NAME_CHARS, description="The name transcripts will show", examples=["Alice"]),
    ],
    file: FileField = None,
    task_id: TaskIdField = None,
    speaker: SpeakerField = None,
) -> VoiceResponse:
    name = _speaker_name(name, "name")
    # Refused before the sample is embedded, when it can be told already; checked again as the voice is added.
    mine = await voices.list(caller)
    if existing := next((voice for voice in mine if voice.name == name), None):
        raise _name_taken(existing)
    if len(mine) >= MAX_VOICES_PER_KEY:
        raise _too_many_voices()
    encoder, embedding = await _sample(caller, settings, store, embedder, file, task_id, speaker)
    voice = Voice(owner=caller, name=name, encoder=encoder, embedding=add_sample([0.0] * len(embedding), 0, embedding))
    try:
        await voices.add(voice, MAX_VOICES_PER_KEY)
    except NameTaken as taken:
        raise _name_taken(taken.existing) from None
    except TooManyVoices:
        raise _too_many_voices() from None
    return _voice_response(voice)


@router.post(
    "/speakers/{voice_id}/samples",
    response_model=VoiceResponse,
    responses=_SAMPLE_ERRORS,
    summary="Add a sample to a voice: its embedding becomes the mean of all its samples",
)
@before_body(_voice_exists)
async def add_voice_sample(
    voice_id: str,
    caller: CallerDep,
    settings: SettingsDep,
    store: StoreDep,
    voices: VoiceStoreDep,
    embedder: SampleEmbedderDep,
    file: FileField = None,
    task_id: TaskIdField = None,
    speaker: SpeakerField = None,
) -> VoiceResponse:
    encoder, embedding = await _sample(caller, settings, store, embedder, file, task_id, speaker)
    voice = await voices.get(caller, voice_id)  # again: it may have been deleted while the sample was embedded
    if voice is None:
        raise _voice_not_found(voice_id)
    if encoder != voice.encoder:
        raise HTTPException(
            422, f"The sample was embedded by {encoder}, the voice by {voice.encoder}; they cannot be averaged. "
            "Enrol it as a separate voice"
        )  # fmt: skip
    updated = voice.with_sample(add_sample(voice.embedding, voice.samples, embedding))
    await voices.save(updated)
    return _voice_response(updated)


@router.get("/speakers", response_model=VoiceList, summary="The key's enrolled voices, oldest first")
async def list_voices(caller: CallerDep, voices: VoiceStoreDep) -> VoiceList:
    return VoiceList(speakers=[_voice_response(voice) for voice in await voices.list(caller)])


@router.delete(
    "/speakers/{voice_id}", response_model=VoiceResponse, responses=_VOICE_NOT_FOUND, summary="Delete a voice"
)
async def delete_voice(voice_id: str, caller: CallerDep, voices: VoiceStoreDep) -> VoiceResponse:
    voice = await voices.get(caller, voice_id)
    if voice is None or not await voices.delete(caller, voice_id):
        raise _voice_not_found(voice_id)
    return _voice_response(voice)


@router.delete("/speakers", response_model=VoicesDeleted, summary="Delete all of the key's voices")
async def delete_all_voices(caller: CallerDep, voices: VoiceStoreDep) -> VoicesDeleted:
    return VoicesDeleted(deleted=await voices.delete_all(caller))


@router.patch(
    "/transcribe/tasks/{task_id}/speakers",
    response_model=TranscriptionResult,
    responses={
        400: problem_response("The body is not JSON"),
        404: problem_response("No task with this id for this key"),
        409: problem_response("The task has not completed"),
        413: problem_response("A body over MAX_BODY_KB"),
        422: problem_response("A speaker the task does not have, a name given twice, or a name empty or too long"),
    },
    summary="Rename a completed task's speakers, in its result and every export",
)
async def rename_task_speakers(
    task: OwnedTaskDep,
    store: StoreDep,
    names: Annotated[
        dict[str, str],
        Body(description="Current speaker → new name", examples=[{"SPEAKER_00": "Alice", "SPEAKER_01": "Bob"}]),
    ],
) -> TranscriptionResult:
    if task.status is not TaskStatus.COMPLETED or task.result is None:
        raise HTTPException(
            409, f"Task {task.id} is {task.status.value}; only a completed task's speakers can be renamed."
        )
    current = [entry["speaker"] for entry in task.result.get("speakers") or []]
    if unknown := [label for label in names if label not in current]:
        raise HTTPException(
            422, f"Task {task.id} has no speaker {unknown[0][:60]!r}; its speakers: {', '.join(current) or 'none'}"
        )
    new_names = {label: _speaker_name(name, label[:60]) for label, name in names.items()}
    after = [new_names.get(label, label) for label in current]
    if len(set(after)) != len(after):
        raise HTTPException(422, "Two speakers would share a name; give each speaker a different one")
    updated = await store.update(task.id, result=rename_speakers(task.result, new_names))
    if updated is None or updated.result is None:
        raise not_found(task.id)
    return TranscriptionResult.model_validate(updated.result)


async def owned_voices(voices: AsyncVoiceStore, caller: str, names: list[str] | None) -> tuple[dict[str, Any], ...]:
    """The caller's voices to look for in a task (`names`: only those; None: all), as a job carries them."""
    mine = await voices.list(caller)
    if names is not None:
        known = {voice.name for voice in mine}
        if missing := [name for name in names if name not in known]:
            raise HTTPException(
                422, f"identify_speakers: this key has no voice named {missing[0][:60]!r}; "
                f"its voices: {', '.join(sorted(known)) or 'none (enrol one with POST /api/v1/speakers)'}"
            )  # fmt: skip
        mine = [voice for voice in mine if voice.name in names]
    return tuple({"name": voice.name, "encoder": voice.encoder, "embedding": voice.embedding} for voice in mine)
