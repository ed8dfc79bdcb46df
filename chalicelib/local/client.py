"""The `tfbatch` command's side of the v3 API: signed-in profiles and authenticated calls.

A profile keeps the API's URL, the instance, the username and a token (never the password) in
`$XDG_CONFIG_HOME/tfbatch/profiles.json` (`~/.config` by default), readable by its owner only.
A token about to expire is exchanged for a fresh one (PUT /v3/identity/token) before a call; an
expired one asks for `tfbatch login` again. Every refusal of the API becomes an `ApiFailure`
carrying the v3 error's message, which the command prints before exiting non-zero.
"""
from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

REFRESH_BEFORE_SECONDS = 300  # a token with less left than this is exchanged before a call
TIMEOUT = (5, 120)  # connect, read


class ApiFailure(Exception):
    """The API refused a call (or could not be reached); the message says why."""


@dataclass
class Profile:
    url: str
    instance_id: str
    username: str
    token: str
    expires: float

    @property
    def instance_url(self) -> str:
        return f"{self.url}/v3/wml_instances/{self.instance_id}"


def config_file() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tfbatch" / "profiles.json"


def _profiles() -> dict[str, dict]:
    path = config_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _save(name: str, profile: Profile) -> None:
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    profiles = {**_profiles(), name: asdict(profile)}
    # Written with mode 600 from the start: a token is as good as the password for its lifetime.
    handle = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(handle, "w") as out:
        json.dump(profiles, out, indent=2)
    os.replace(path.with_suffix(".tmp"), path)


def _expiry(token: str) -> float:
    """The token's `exp` (read, not verified: the API verifies it)."""
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def _error(response: requests.Response) -> ApiFailure:
    try:
        errors = response.json()["errors"]
        return ApiFailure(f"{errors[0]['message']} ({response.status_code} {errors[0]['code']})")
    except (ValueError, KeyError, IndexError, TypeError):
        return ApiFailure(f"The API answered {response.status_code}: {response.text[:300]}")


def login(name: str, url: str, instance_id: str, username: str, password: str) -> Profile:
    """Exchange the instance's credentials for a token, and keep it (not the password) as `name`."""
    url = url.rstrip("/")
    try:
        response = requests.get(f"{url}/v3/identity/token", auth=(username, password), timeout=TIMEOUT)
    except requests.RequestException as error:
        raise ApiFailure(f"The API at {url} could not be reached: {type(error).__name__}") from None
    if response.status_code != 200:
        raise _error(response)
    token = response.json()["token"]
    profile = Profile(url, instance_id, username, token, _expiry(token))
    _save(name, profile)
    return profile


class Client:
    """Authenticated calls for one profile."""

    def __init__(self, name: str):
        found = _profiles().get(name)
        if found is None:
            raise ApiFailure(f"No profile '{name}'; sign in with `tfbatch login` first.")
        self.name, self.profile = name, Profile(**found)
        self.http = requests.Session()

    def _token(self) -> str:
        left = self.profile.expires - time.time()
        if left <= 0:
            raise ApiFailure(f"The token of profile '{self.name}' has expired; sign in again with `tfbatch login`.")
        if left < REFRESH_BEFORE_SECONDS:
            response = self.http.put(f"{self.profile.url}/v3/identity/token", json={"token": self.profile.token},
                                     headers={"Authorization": f"Bearer {self.profile.token}"}, timeout=TIMEOUT)
            if response.status_code != 200:
                raise _error(response)
            self.profile.token = response.json()["token"]
            self.profile.expires = _expiry(self.profile.token)
            _save(self.name, self.profile)
        return self.profile.token

    def call(self, method: str, path_or_url: str, *, expect: tuple[int, ...] = (200,), **options) -> Any:
        """The JSON answer of one call (None for an empty one); a path is relative to the instance."""
        url = path_or_url if "://" in path_or_url else f"{self.profile.instance_url}{path_or_url}"
        headers = {"Authorization": f"Bearer {self._token()}", **options.pop("headers", {})}
        try:
            response = self.http.request(method, url, headers=headers, timeout=TIMEOUT, **options)
        except requests.RequestException as error:
            raise ApiFailure(f"The API at {self.profile.url} could not be reached: {type(error).__name__}") from None
        if response.status_code not in expect:
            raise _error(response)
        return response.json() if response.content else None
