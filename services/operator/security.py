"""NATS users with subject permissions: one per service, the operator (`cli`) and a read-only `viewer` (§9).

The table below is the single source of the authorization block that both the embedded server (`esper up
--secure`) and compose (`deploy/nats/auth.conf`) include. Passwords are never in it: each user's password is
the server-side environment variable `<USER>_NATS_PASSWORD`, resolved by nats-server when it reads the file.
"""

from __future__ import annotations

import argparse
import os
import secrets
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from leyline_schemas import subjects
from services.operator.registry import SERVICE_NAMES
from services.runtime.bus import inbox_prefix

P = subjects.PREFIX
STEPS = subjects.STEPS_STREAM
TELEMETRY = subjects.TELEMETRY_STREAM
RUNS_KV = f"KV_{subjects.RUNS_BUCKET}"
POLICIES_KV = f"KV_{subjects.POLICIES_BUCKET}"
WEIGHTS_OBJ = f"OBJ_{subjects.WEIGHTS_STORE}"
HOSTS_OBJ = f"OBJ_{subjects.HOSTS_STORE}"

#: Read-side JetStream API: stream/consumer info, message gets, ephemeral consumers and pulls.
JS_READ = (
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.>",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.MSG.GET.>",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.API.CONSUMER.NAMES.>",
    "$JS.API.CONSUMER.LIST.>",
    "$JS.API.CONSUMER.MSG.NEXT.>",
)

#: Every service bootstraps the streams, buckets and store it may find missing (services/runtime/jetstream.py),
#: so each may create Esper's own streams and bring STEPS/TELEMETRY up to date; none may delete or purge them.
JS_BOOTSTRAP = (
    *(f"$JS.API.STREAM.CREATE.{name}" for name in (STEPS, TELEMETRY, RUNS_KV, POLICIES_KV, WEIGHTS_OBJ, HOSTS_OBJ)),
    *(f"$JS.API.STREAM.UPDATE.{name}" for name in (STEPS, TELEMETRY)),
    "$JS.API.CONSUMER.DURABLE.CREATE.>",
)

#: Micro-service discovery: services answer `$SRV.*` (replies go through allow_responses); anyone may ask.
DISCOVERY = "$SRV.>"
TELEMETRY_WRITE = f"{P}.telemetry.>"
#: Ordered consumers answer the server's flow-control messages; users without allow_responses need this.
FLOW_CONTROL = "$JS.FC.>"


@dataclass(frozen=True)
class Permissions:
    """Subjects a user may publish to and subscribe to; `allow_responses` lets it answer requests it received."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    allow_responses: bool = True
    #: Users whose requests this one answers: it may publish into their inboxes. allow_responses alone is not
    #: enough: a request in flight while nats-server restarts is answered on the new server, which never saw it.
    answers: tuple[str, ...] = ()

    @property
    def publish_allowed(self) -> tuple[str, ...]:
        return (*self.publish, *(f"{inbox_prefix(caller)}.>" for caller in self.answers))


def _service(
    publish: tuple[str, ...], serve: tuple[str, ...], answers: tuple[str, ...], consume: tuple[str, ...] = ()
) -> Permissions:
    """A service: its own writes, the endpoints it serves and who calls them, the streams it acknowledges."""
    return Permissions(
        publish=(*publish, TELEMETRY_WRITE, DISCOVERY, *JS_READ, *JS_BOOTSTRAP, *(f"$JS.ACK.{s}.>" for s in consume)),
        subscribe=(*serve, DISCOVERY),
        answers=answers,
    )


USERS: dict[str, Permissions] = {
    # Tolaria drives envs: it alone writes step records, run/lease state and host checkpoints, and asks Kasmina for
    # each step. It may also submit runs, so that `docker compose run --rm tolaria esper run ...` works.
    "tolaria": _service(
        publish=(
            f"{P}.steps.>",
            subjects.KASMINA_STEP,
            f"{P}.runs.>",
            f"$KV.{subjects.RUNS_BUCKET}.>",
            f"$O.{subjects.HOSTS_STORE}.>",
            f"$JS.API.STREAM.PURGE.{HOSTS_OBJ}",
        ),
        serve=(f"{P}.runs.>",),
        answers=("cli", "tolaria"),
    ),
    "kasmina": _service(publish=(subjects.TAMIYO_DECIDE,), serve=(f"{P}.kasmina.>",), answers=("tolaria", "cli")),
    "tamiyo": _service(publish=(), serve=(f"{P}.tamiyo.>",), answers=("kasmina", "cli")),
    # Simic alone writes policy pointers and weights (the object store replaces chunks by purging them).
    "simic": _service(
        publish=(
            f"$KV.{subjects.POLICIES_BUCKET}.>",
            f"$O.{subjects.WEIGHTS_STORE}.>",
            f"$JS.API.STREAM.PURGE.{POLICIES_KV}",
            f"$JS.API.STREAM.PURGE.{WEIGHTS_OBJ}",
        ),
        serve=(f"{P}.simic.>", f"{P}.runs.>"),
        answers=("cli", "tolaria"),
        consume=(STEPS,),
    ),
    "karn": _service(publish=(), serve=(f"{P}.karn.>",), answers=("cli", "viewer"), consume=(STEPS, TELEMETRY)),
    # The operator: runs, status, policy pointers, benchmarks; never step records, telemetry or weights.
    "cli": Permissions(
        publish=(
            f"{P}.>",
            f"$KV.{subjects.RUNS_BUCKET}.>",
            f"$KV.{subjects.POLICIES_BUCKET}.>",
            "$JS.API.>",
            FLOW_CONTROL,
            DISCOVERY,
        ),
        publish_deny=(
            f"{P}.steps.>",
            TELEMETRY_WRITE,
            f"$O.{subjects.WEIGHTS_STORE}.>",
            f"$O.{subjects.HOSTS_STORE}.>",
        ),
        subscribe=(f"{P}.>",),
        allow_responses=False,
    ),
    # The Sanctum TUI and other dashboards: read streams and discovery, ask Karn, write nothing.
    "viewer": Permissions(
        publish=(*JS_READ, FLOW_CONTROL, DISCOVERY, f"{P}.karn.>"),
        subscribe=(f"{P}.telemetry.>", f"{P}.steps.>"),
        allow_responses=False,
    ),
}

SERVICE_USERS = SERVICE_NAMES


def password_variable(user: str) -> str:
    """The environment variable that holds `user`'s password on the nats-server side."""
    return f"{user.upper()}_NATS_PASSWORD"


def _subject_list(key: str, items: tuple[str, ...], indent: str) -> list[str]:
    return [f"{indent}{key}: [", *(f'{indent}  "{item}",' for item in items), f"{indent}]"]


def render_authorization(users: Mapping[str, Permissions] | None = None) -> str:
    """The `authorization` block for nats-server; passwords are `$<USER>_NATS_PASSWORD` references."""
    lines = [
        "# Generated by `python -m services.operator.security auth-conf` from services/operator/security.py.",
        "# Each password is read from the server's environment variable <USER>_NATS_PASSWORD.",
        "authorization {",
        "  users = [",
    ]
    for user, perms in (users or USERS).items():
        lines += [
            "    {",
            f'      user: "{user}"',
            f"      password: ${password_variable(user)}",
            "      permissions: {",
            "        publish: {",
            *_subject_list("allow", perms.publish_allowed, " " * 10),
        ]
        if perms.publish_deny:
            lines += _subject_list("deny", perms.publish_deny, " " * 10)
        lines += [
            "        }",
            "        subscribe: {",
            *_subject_list("allow", (*perms.subscribe, f"{inbox_prefix(user)}.>"), " " * 10),
            "        }",
        ]
        if perms.allow_responses:
            lines.append("        allow_responses: true")
        lines += ["      }", "    }"]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


#: nats-server parses an environment value as a config value: a password that looks like a number, a size or a
#: boolean would not be read as a string. Generated ones start with a letter and use letters and digits only.
_ALPHABET = string.ascii_letters + string.digits


def generate_password(length: int = 32) -> str:
    return secrets.choice(string.ascii_letters) + "".join(secrets.choice(_ALPHABET) for _ in range(length - 1))


def generate_passwords(users: tuple[str, ...] | None = None) -> dict[str, str]:
    return {user: generate_password() for user in users or tuple(USERS)}


def server_environment(passwords: Mapping[str, str]) -> dict[str, str]:
    """The environment nats-server needs to resolve the password references of the authorization block."""
    return {password_variable(user): password for user, password in passwords.items()}


def client_environment(user: str, password: str) -> dict[str, str]:
    """The `ESPER_*` variables a process needs to connect as `user`."""
    return {"ESPER_NATS_USER": user, "ESPER_NATS_PASSWORD": password}


def write_env_file(path: Path, values: Mapping[str, str]) -> Path:
    """Write `KEY=value` lines readable by the owner only (credentials never go into images or logs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{key}={value}\n" for key, value in values.items())
    os.chmod(path, 0o600)
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """The `KEY=value` lines of an env file (blank lines and # comments skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def main(argv: list[str] | None = None) -> int:
    """`auth-conf` prints the authorization block; `compose-env` prints fresh passwords for compose's `.env`."""
    parser = argparse.ArgumentParser(prog="python -m services.operator.security", description=main.__doc__)
    parser.add_argument("action", choices=("auth-conf", "compose-env"))
    args = parser.parse_args(argv)
    if args.action == "auth-conf":
        sys.stdout.write(render_authorization())
    else:
        sys.stdout.writelines(f"{key}={value}\n" for key, value in server_environment(generate_passwords()).items())
    return 0


if __name__ == "__main__":
    sys.exit(main())
