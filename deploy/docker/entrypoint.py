"""Container entrypoint of the Crossdock image: ``entrypoint.py SERVICE [ARGS...]``.

``SERVICE`` is a folder of ``services/`` with a ``__main__.py`` (``erp``, ``wms``,
``tms``, ``ordertoship``, and whatever is added later): it runs
``python -m services.SERVICE``; ``gateway`` (the top-level ``gateway/`` package,
the experience layer) runs ``python -m gateway``. Anything else runs as a command, e.g.
``entrypoint.py crossdock orders`` (the operator CLI).

Before that, two things Kubernetes needs and ``services/mesh/config.py`` does
not do by itself:

1. Secrets as files. Every file in ``$CROSSDOCK_SECRETS_DIR`` (default
   ``/etc/crossdock/secrets``) whose name is an environment variable name becomes
   that variable, its value the file's content without the final newline (a
   file wins over the same variable set in the environment). Mounting Secrets
   as files keeps credentials out of the pod spec's ``env``.
2. NATS credentials. ``CROSSDOCK_NATS_USER`` and ``CROSSDOCK_NATS_PASSWORD`` (from
   such files) are written into the user-info part of ``CROSSDOCK_NATS_URL``
   (the address itself comes from a ConfigMap). They must be URL-safe
   (letters, digits, ``.``, ``_``, ``~``, ``-``): the NATS client takes the user
   info of the URL literally, so an escaped character would not match.

The process is replaced (``exec``), so the service is PID 1 and receives SIGTERM
directly; it handles it (graceful drain).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_SECRETS_DIR = "/etc/crossdock/secrets"
REPO_DIR = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO_DIR / "services"
# Top-level packages that run as a service (``python -m NAME``).
TOP_LEVEL = ("gateway",)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")

USAGE = """usage: entrypoint.py SERVICE [ARGS...] | COMMAND [ARGS...]
  SERVICE  one of: {services}  (runs python -m services.SERVICE, or python -m gateway)
  COMMAND  anything else, e.g. `crossdock orders`
"""


class EntrypointError(Exception):
    pass


def load_secret_files(env: dict[str, str], directory: str) -> list[str]:
    """Set env[NAME] from each file NAME in the directory; returns the names set."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    loaded = []
    for path in sorted(folder.iterdir()):
        # Kubernetes' secret volumes also hold ..data and ..<timestamp> links.
        if not _ENV_NAME.match(path.name) or not path.is_file():
            continue
        env[path.name] = path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        loaded.append(path.name)
    return loaded


def with_nats_credentials(url: str, user: str, password: str) -> str:
    """Put user:password into every URL of a comma-separated NATS URL list that has none."""
    for name, value in (("CROSSDOCK_NATS_USER", user), ("CROSSDOCK_NATS_PASSWORD", password)):
        if not _URL_SAFE.match(value):
            raise EntrypointError(
                f"{name} must be URL-safe (letters, digits, '.', '_', '~', '-'): "
                "the NATS client does not unescape the URL's user info"
            )
    out = []
    for one in url.split(","):
        one = one.strip()
        parts = urlsplit(one)
        if not parts.scheme or not parts.hostname:
            raise EntrypointError(f"CROSSDOCK_NATS_URL: not a URL: {one!r}")
        if "@" not in parts.netloc:
            parts = parts._replace(netloc=f"{user}:{password}@{parts.netloc}")
        out.append(urlunsplit(parts))
    return ",".join(out)


def prepare_environment(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    load_secret_files(env, env.get("CROSSDOCK_SECRETS_DIR", DEFAULT_SECRETS_DIR))
    user = env.get("CROSSDOCK_NATS_USER", "")
    password = env.get("CROSSDOCK_NATS_PASSWORD", "")
    if bool(user) != bool(password):
        raise EntrypointError("set both CROSSDOCK_NATS_USER and CROSSDOCK_NATS_PASSWORD, or neither")
    if user:
        env["CROSSDOCK_NATS_URL"] = with_nats_credentials(
            env.get("CROSSDOCK_NATS_URL", "nats://127.0.0.1:4322"), user, password
        )
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def known_services() -> list[str]:
    names = {p.parent.name for p in SERVICES_DIR.glob("*/__main__.py")} if SERVICES_DIR.is_dir() else set()
    return sorted(names | {n for n in TOP_LEVEL if (REPO_DIR / n / "__main__.py").is_file()})


def command_for(argv: list[str]) -> list[str]:
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise EntrypointError(USAGE.format(services=", ".join(known_services())))
    if argv[0] in known_services():
        module = argv[0] if argv[0] in TOP_LEVEL else f"services.{argv[0]}"
        return [sys.executable, "-m", module, *argv[1:]]
    return argv


def main(argv: list[str]) -> None:
    try:
        command = command_for(argv)
        env = prepare_environment(dict(os.environ))
    except EntrypointError as exc:
        print(f"crossdock entrypoint: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"crossdock entrypoint: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        raise SystemExit(127) from None


if __name__ == "__main__":
    main(sys.argv[1:])
