"""Speakers named for one request by audio samples: OpenAI's `known_speaker_names[]` with
`known_speaker_references[]`. Nothing is enrolled: the samples are embedded, compared with that
request's speakers, and forgotten.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from app.media import MediaError
from app.tasks.files import new_upload_path
from app.voices.enrollment import SampleEmbedder
from app.voices.errors import SampleError
from app.voices.matching import EMBEDDED_ENCODER

MAX_KNOWN_SPEAKERS = 4
"""As OpenAI's diarizing model takes them."""

# data:[<media type>][;parameters];base64,<payload>: only base64 carries audio.
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*;base64,(?P<payload>.*)", re.DOTALL)


class UnusableReference(ValueError):
    """A reference that cannot be used; the message names it and says why (a 422 for the client)."""


def decode_data_url(value: str, index: int) -> bytes:
    """The audio bytes of a base64 data URL (`data:audio/wav;base64,...`)."""
    match = _DATA_URL.fullmatch(value.strip())
    if match is None or not (match["type"] or "audio/").startswith(("audio/", "video/", "application/octet")):
        raise UnusableReference(
            f"known_speaker_references[{index}]: give the sample as a data URL, data:audio/wav;base64,<the file>"
        )
    try:
        audio = base64.b64decode(match["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise UnusableReference(f"known_speaker_references[{index}]: the data URL's base64 is malformed") from None
    if not audio:
        raise UnusableReference(f"known_speaker_references[{index}]: the sample is empty")
    return audio


async def known_voices(
    names: list[str], references: list[str], embedder: SampleEmbedder, upload_dir: Path, owner: str
) -> tuple[dict[str, object], ...]:
    """The request's voices (`name`, `encoder`, `embedding`), as `Job.known_voices` takes them."""
    voices: list[dict[str, object]] = []
    for index, (name, reference) in enumerate(zip(names, references, strict=True)):
        path = new_upload_path(upload_dir)
        path.write_bytes(decode_data_url(reference, index))
        try:
            embedding = await embedder.embed(path, owner)
        except (SampleError, MediaError) as error:
            reason = str(error).removeprefix("file: ")
            raise UnusableReference(f"known_speaker_references[{index}] ({name[:40]}): {reason}") from None
        finally:
            path.unlink(missing_ok=True)  # only the embedding is used, and only for this request
        voices.append({"name": name, "encoder": EMBEDDED_ENCODER, "embedding": embedding})
    return tuple(voices)
