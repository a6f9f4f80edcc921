"""The address table against the shipped server: every non-global range refused for audio_url
and callback_url, from the request, with a reason."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_address_policy import REFUSED
from tests.attacks.conftest import Service

UPLOAD = "/api/v1/transcribe/upload"
KEY = {"X-API-Key": "bystander"}


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize("field", ["audio_url", "callback_url"])
def test_every_non_global_range_is_refused(service: Service, field: str) -> None:
    form = {"audio_url": "http://8.8.8.8/a.wav"}  # a public literal address: resolved without a network
    refused = []
    for address, why in REFUSED:
        if "%" in address:
            continue  # a zone id is no part of a URL
        url = f"http://{_host(address)}/a.wav"
        response = httpx.post(service.url(UPLOAD), headers=KEY, data={**form, field: url})
        assert response.status_code == 422, (address, why, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(f"{field}: "), detail
        assert "non-public address" in detail, detail
        refused.append(address)
    print(f"\n[attack] {field}: {len(refused)} addresses of the table, each refused 422 with the reason")
