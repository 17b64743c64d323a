"""Webhook verification and payload parsing, without a web framework.

The HTTP server hands over the request's headers and raw body (and query, for
Docker Hub, which can add neither headers nor signatures); these functions
check the size, then the signature or token over the raw bytes (in constant
time), then parse. They return typed values or raise a `WebhookError` that
carries the HTTP status to answer: 413 too large, 401 not authenticated, 400
malformed. Keeping them pure makes every provider's format testable with
plain bytes, and keeps the order fixed: nothing is parsed before it is trusted.

Git pushes: GitHub (`X-Hub-Signature-256: sha256=<hex>`), Gitea
(`X-Gitea-Signature: <hex>`), GitLab (`X-Gitlab-Token`). Registry pushes:
Docker Hub, GitHub packages (`registry_package` / `package` events), Harbor
(`PUSH_ARTIFACT`) and the CNCF distribution notification format; signed with
`X-Hub-Signature-256` or `X-Fleetwave-Signature` (HMAC-SHA256 of the body), or
carrying a shared token (`Authorization: Bearer <t>`, a bare `Authorization`
value as Harbor sends it, `X-Fleetwave-Token`, or `?token=` in the URL).

Replays. Every authenticated delivery is remembered by its id (see `delivery_key`)
in the store, and a second one with the same id is refused, across restarts:
- our own scheme signs a timestamp: `X-Fleetwave-Timestamp: <unix seconds>` and
  `X-Fleetwave-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>`; a
  delivery without the timestamp, or more than `REPLAY_WINDOW` away from our
  clock, is refused (its id, `X-Fleetwave-Delivery`, is kept for the window);
- GitHub and Gitea (`X-Hub-Signature-256`, `X-Gitea-Signature`) and GitLab
  (`X-Gitlab-Token`) sign no timestamp: only their delivery id
  (`X-GitHub-Delivery`, `X-Gitea-Delivery`, `X-Gitlab-Event-UUID`) guards
  them, kept for `DELIVERY_TTL`;
- registries send no delivery header: the ids inside the notification (the
  distribution event ids, Docker Hub's callback URL, Harbor's occur_at and
  digest) stand in, kept for `DELIVERY_TTL`. A shared token in the URL or a
  header proves who sent it, not when: prefer a signature where the registry
  can sign.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetwave.sources.pushes import GitPush, ImagePush

__all__ = [
    "DEFAULT_MAX_BODY",
    "DELIVERY_TTL",
    "REPLAY_WINDOW",
    "BadSignature",
    "GitPush",
    "Ignored",
    "ImagePush",
    "MalformedPayload",
    "PayloadTooLarge",
    "ReplayedDelivery",
    "StaleTimestamp",
    "WebhookError",
    "WebhookSecrets",
    "delivery_key",
    "parse_git_push",
    "parse_registry_push",
    "sign_delivery",
    "verify_git_webhook",
    "verify_registry_webhook",
]

DEFAULT_MAX_BODY = 1024 * 1024
"""1 MiB: real push payloads are a few KiB; this bounds memory per request."""

DISTRIBUTION_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"


class WebhookError(Exception):
    """A request we refuse; `status` and `code` go straight into the HTTP error answer."""

    status = 400
    code = "BadRequest"


class MalformedPayload(WebhookError):
    status = 400
    code = "MalformedPayload"


class BadSignature(WebhookError):
    status = 401
    code = "Unauthorized"


class PayloadTooLarge(WebhookError):
    status = 413
    code = "PayloadTooLarge"


class StaleTimestamp(WebhookError):
    """A signed timestamp that is missing, unreadable or outside `REPLAY_WINDOW`."""

    status = 401
    code = "StaleTimestamp"


class ReplayedDelivery(WebhookError):
    """A delivery id already handled: a replay, or a sender retrying one that succeeded."""

    status = 409
    code = "ReplayedDelivery"


REPLAY_WINDOW = 300.0
"""Seconds a signed timestamp may be away from our clock (either way): 5 minutes, as
Slack and Stripe allow, ample for retries and clock skew."""
DELIVERY_TTL = 7 * 86400.0
"""Seconds a delivery id without a signed timestamp is remembered: longer than GitHub's
and registries' automatic retries; only authenticated deliveries are stored."""
TIMESTAMP_HEADER = "X-Fleetwave-Timestamp"


@dataclass(frozen=True, slots=True)
class Ignored:
    """A genuine, verified delivery that is not a push (GitHub `ping`, a tag deletion, ...)."""

    event: str
    reason: str


@dataclass(frozen=True, slots=True)
class WebhookSecrets:
    """What a sender may prove: the HMAC key, and/or shared tokens. Never logged."""

    hmac_secret: bytes | None = None
    tokens: tuple[str, ...] = ()

    @classmethod
    def of(cls, hmac_secret: str | bytes | None = None,
           tokens: Iterable[str] = ()) -> WebhookSecrets:
        key = hmac_secret.encode() if isinstance(hmac_secret, str) else hmac_secret
        return cls(key or None, tuple(t for t in tokens if t))

    def __repr__(self) -> str:
        return (f"WebhookSecrets(hmac_secret={'***' if self.hmac_secret else None}, "
                f"tokens={len(self.tokens)})")

    @property
    def configured(self) -> bool:
        return bool(self.hmac_secret or self.tokens)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works on a plain dict too."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, val in headers.items():
        if key.lower() == wanted:
            return val
    return None


def check_size(body: bytes, max_body: int = DEFAULT_MAX_BODY) -> None:
    if len(body) > max_body:
        raise PayloadTooLarge(f"body of {len(body)} bytes is over the limit of {max_body}")


def _hmac_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _signature_matches(given: str, secret: bytes, body: bytes) -> bool:
    value = given.strip()
    if value.lower().startswith("sha256="):
        value = value[len("sha256="):]
    return hmac.compare_digest(value.lower().encode(), _hmac_hex(secret, body).encode())


def _token_matches(given: str | None, tokens: Iterable[str]) -> bool:
    if not given:
        return False
    value = given.strip()
    if value.lower().startswith("bearer "):
        value = value[len("bearer "):].strip()
    ok = False
    for token in tokens:
        # Compare with every token (no early exit) so timing says nothing about which matched.
        ok |= hmac.compare_digest(value.encode(), token.encode())
    return ok


def sign_delivery(secret: bytes, body: bytes, timestamp: int) -> str:
    """The `X-Fleetwave-Signature` of our own scheme: the timestamp is signed with the body."""
    return "sha256=" + _hmac_hex(secret, str(timestamp).encode() + b"." + body)


def _verify_timestamped(headers: Mapping[str, str], body: bytes, secret: bytes,
                        signature: str, now: float) -> None:
    raw = (header(headers, TIMESTAMP_HEADER) or "").strip()
    if not raw.isdigit() or len(raw) > 12:
        raise StaleTimestamp(f"X-Fleetwave-Signature needs {TIMESTAMP_HEADER}: the unix time in "
                             "seconds, signed as HMAC-SHA256 of '<timestamp>.' + body")
    if not _signature_matches(signature, secret, raw.encode() + b"." + body):
        raise BadSignature("signature does not match the timestamp and body: sign "
                           "'<timestamp>.' + body with the webhook secret")
    if abs(now - int(raw)) > REPLAY_WINDOW:
        raise StaleTimestamp(f"{TIMESTAMP_HEADER} is {now - int(raw):+.0f} s from the "
                             f"server's clock; the window is {REPLAY_WINDOW:.0f} s: a replay, "
                             "or a clock to fix")


def _verify(headers: Mapping[str, str], body: bytes, secrets: WebhookSecrets,
            signature_headers: tuple[str, ...], token_values: Iterable[str | None],
            now: float) -> None:
    if not secrets.configured:
        raise BadSignature("this webhook has no secret configured, so no request is trusted; "
                           "configure a webhook secret or token")
    ours = header(headers, "X-Fleetwave-Signature")
    if ours and secrets.hmac_secret is not None:
        _verify_timestamped(headers, body, secrets.hmac_secret, ours, now)
        return
    signatures = [v for h in signature_headers if (v := header(headers, h))]
    if signatures and secrets.hmac_secret is not None:
        if any(_signature_matches(s, secrets.hmac_secret, body) for s in signatures):
            return
        raise BadSignature("signature does not match the body: check the webhook secret")
    if any(_token_matches(t, secrets.tokens) for t in token_values):
        return
    raise BadSignature("missing or wrong signature or token: sign the body with HMAC-SHA256 "
                       "(X-Hub-Signature-256) or send the shared token")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedPayload(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedPayload("body is JSON but not an object")
    return data


def _str_at(data: Mapping[str, Any], *path: str) -> str | None:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None


# -- git pushes -------------------------------------------------------------------


def git_provider(headers: Mapping[str, str]) -> str | None:
    """Gitea also sends `X-GitHub-Event`, so it is recognised first."""
    if header(headers, "X-Gitea-Event"):
        return "gitea"
    if header(headers, "X-Gitlab-Event"):
        return "gitlab"
    if header(headers, "X-GitHub-Event"):
        return "github"
    return None


def verify_git_webhook(headers: Mapping[str, str], body: bytes, secrets: WebhookSecrets, *,
                       max_body: int = DEFAULT_MAX_BODY,
                       now: float | None = None) -> GitPush | Ignored:
    """Check and parse a push webhook (`POST /api/v1/webhooks/git`)."""
    check_size(body, max_body)
    provider = git_provider(headers)
    if provider == "gitlab":
        # GitLab cannot sign; it sends the configured secret token back verbatim.
        if not secrets.configured:
            raise BadSignature("this webhook has no secret configured, so no request is "
                               "trusted; configure a webhook secret or token")
        key = secrets.hmac_secret.decode(errors="replace") if secrets.hmac_secret else None
        if not _token_matches(header(headers, "X-Gitlab-Token"),
                              [*secrets.tokens, *([key] if key else [])]):
            raise BadSignature("X-Gitlab-Token does not match: check the webhook secret token")
    else:
        _verify(headers, body, secrets, ("X-Gitea-Signature", "X-Hub-Signature-256"),
                (header(headers, "Authorization"), header(headers, "X-Fleetwave-Token")),
                time.time() if now is None else now)
    return parse_git_push(headers, body)


def parse_git_push(headers: Mapping[str, str], body: bytes) -> GitPush | Ignored:
    """The push in a (verified) GitHub, GitLab or Gitea payload."""
    provider = git_provider(headers) or "generic"
    event = (header(headers, "X-Gitea-Event") or header(headers, "X-Gitlab-Event")
             or header(headers, "X-GitHub-Event") or "push")
    data = _json_object(body)
    if event.lower() not in ("push", "push hook"):
        return Ignored(event, f"{event} events do not move a branch")
    ref, after = _str_at(data, "ref"), _str_at(data, "after")
    if ref is None or after is None:
        raise MalformedPayload("a push payload needs string fields 'ref' and 'after'")
    if provider == "gitlab":
        repository = (_str_at(data, "project", "path_with_namespace")
                      or _str_at(data, "repository", "name") or "")
    else:
        repository = (_str_at(data, "repository", "full_name")
                      or _str_at(data, "repository", "name") or "")
    delivery = (header(headers, "X-GitHub-Delivery") or header(headers, "X-Gitea-Delivery")
                or header(headers, "X-Gitlab-Event-UUID"))
    if after.strip("0") == "":
        return Ignored(event, f"{ref} was deleted")
    return GitPush(ref=ref, after=after, repository=repository, provider=provider,
                   delivery_id=delivery)


# -- replays -----------------------------------------------------------------------

DELIVERY_HEADERS = ("X-Fleetwave-Delivery", "X-GitHub-Delivery", "X-Gitea-Delivery",
                    "X-Gitlab-Event-UUID")


def delivery_key(hook: str, headers: Mapping[str, str],
                 pushes: Sequence[ImagePush] = ()) -> tuple[str, float] | None:
    """The key a (verified) delivery is remembered by, and for how long; None: no id.

    Hashed, so a sender's id of any length costs one fixed-size row.
    """
    timestamped = bool(header(headers, "X-Fleetwave-Signature"))
    ident = next((v.strip() for h in DELIVERY_HEADERS if (v := header(headers, h))
                  and v.strip()), None)
    if ident is None and pushes and all(p.delivery_id for p in pushes):
        ident = "\n".join(sorted(str(p.delivery_id) for p in pushes))
    if ident is None:
        return None
    digest = hashlib.sha256(ident.encode("utf-8", "replace")).hexdigest()[:40]
    return f"{hook}:{digest}", REPLAY_WINDOW * 2 if timestamped else DELIVERY_TTL


# -- registry pushes --------------------------------------------------------------


def verify_registry_webhook(headers: Mapping[str, str], body: bytes, secrets: WebhookSecrets,
                            *, query: Mapping[str, str] | None = None,
                            max_body: int = DEFAULT_MAX_BODY,
                            now: float | None = None) -> list[ImagePush]:
    """Check and parse a registry notification (`POST /api/v1/webhooks/registry`).

    Returns every pushed tag in it; an empty list for notifications that are not
    tag pushes (pulls, deletions, untagged manifests).
    """
    check_size(body, max_body)
    _verify(headers, body, secrets, ("X-Hub-Signature-256",),
            (header(headers, "Authorization"), header(headers, "X-Fleetwave-Token"),
             (query or {}).get("token")), time.time() if now is None else now)
    return parse_registry_push(headers, body)


def parse_registry_push(headers: Mapping[str, str], body: bytes) -> list[ImagePush]:
    """Recognise the format by its shape and read the pushed tags out of it."""
    data = _json_object(body)
    content_type = (header(headers, "Content-Type") or "").split(";")[0].strip().lower()
    if content_type == DISTRIBUTION_MEDIA_TYPE or isinstance(data.get("events"), list):
        return _distribution(data)
    if "push_data" in data:
        return _docker_hub(data)
    if "event_data" in data and "type" in data:
        return _harbor(data)
    if "registry_package" in data or "package" in data:
        return _github_package(headers, data)
    raise MalformedPayload("not a registry notification fleetwave knows: expected Docker Hub, "
                           "GitHub packages, Harbor or CNCF distribution events")


def _docker_hub(data: Mapping[str, Any]) -> list[ImagePush]:
    tag = _str_at(data, "push_data", "tag")
    repository = _str_at(data, "repository", "repo_name")
    if repository is None:
        raise MalformedPayload("Docker Hub payload lacks repository.repo_name")
    if tag is None:
        raise MalformedPayload("Docker Hub payload lacks push_data.tag")
    return [ImagePush(repository, tag, None, _str_at(data, "callback_url"), "docker.io")]


def _github_package(headers: Mapping[str, str], data: Mapping[str, Any]) -> list[ImagePush]:
    key = "registry_package" if "registry_package" in data else "package"
    package = data.get(key)
    if not isinstance(package, Mapping):
        raise MalformedPayload(f"GitHub {key} payload: {key} is not an object")
    action = _str_at(data, "action") or "published"
    if action not in ("published", "updated"):
        return []
    name = _str_at(package, "name")
    namespace = _str_at(package, "namespace") or _str_at(package, "owner", "login")
    if name is None:
        raise MalformedPayload(f"GitHub {key} payload lacks {key}.name")
    version = package.get("package_version")
    if not isinstance(version, Mapping):
        raise MalformedPayload(f"GitHub {key} payload lacks {key}.package_version")
    tag = _str_at(version, "container_metadata", "tag", "name")
    digest = _str_at(version, "container_metadata", "tag", "digest")
    plain = _str_at(version, "version")
    if tag is None and plain is not None and not plain.startswith("sha256:"):
        tag = plain
    if digest is None and plain is not None and plain.startswith("sha256:"):
        digest = plain
    if tag is None:
        return []
    repository = f"{namespace}/{name}".lower() if namespace and "/" not in name else name.lower()
    url = _str_at(version, "package_url") or ""
    registry = url.split("/", 1)[0] if "/" in url else "ghcr.io"
    return [ImagePush(repository, tag, digest, header(headers, "X-GitHub-Delivery"), registry)]


def _harbor(data: Mapping[str, Any]) -> list[ImagePush]:
    if data.get("type") != "PUSH_ARTIFACT":
        return []
    event = data.get("event_data")
    repository = _str_at(data, "event_data", "repository", "repo_full_name")
    if not isinstance(event, Mapping) or repository is None:
        raise MalformedPayload("Harbor payload lacks event_data.repository.repo_full_name")
    resources = event.get("resources")
    if not isinstance(resources, list):
        raise MalformedPayload("Harbor payload lacks event_data.resources")
    out = []
    for res in resources:
        if not isinstance(res, Mapping):
            raise MalformedPayload("Harbor payload: a resource is not an object")
        tag = _str_at(res, "tag")
        if tag is None:
            continue
        digest = _str_at(res, "digest")
        url = _str_at(res, "resource_url") or ""
        registry = url.split("/", 1)[0] if "/" in url else None
        delivery = f"harbor:{data.get('occur_at')}:{repository}:{tag}:{digest}"
        out.append(ImagePush(repository, tag, digest, delivery, registry))
    return out


def _distribution(data: Mapping[str, Any]) -> list[ImagePush]:
    events = data.get("events")
    if not isinstance(events, list):
        raise MalformedPayload("distribution notification lacks an 'events' list")
    out = []
    for event in events:
        if not isinstance(event, Mapping):
            raise MalformedPayload("distribution notification: an event is not an object")
        if event.get("action") != "push":
            continue
        repository = _str_at(event, "target", "repository")
        tag = _str_at(event, "target", "tag")
        if repository is None:
            raise MalformedPayload("distribution push event lacks target.repository")
        if tag is None:
            continue  # a blob or a manifest pushed by digest: no tag to roll out
        out.append(ImagePush(repository, tag, _str_at(event, "target", "digest"),
                             _str_at(event, "id"), _str_at(event, "request", "host")))
    return out
