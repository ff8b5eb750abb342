"""Secret flag values kept out of Beam's displays.

At parse time the value of a flag in `SECRET_FLAGS` is swapped for a placeholder, so Beam's
displays of the options (str(options), get_all_options(), the Dataflow job's options and display
data) never hold it; this process keeps the value, and `secret_flag_value` gives it back to the
code that needs it (the Kafka client configuration, the schema registry's Basic auth).
"""

from __future__ import annotations

import uuid
from typing import Any

SECRET_FLAGS = ("sasl_password", "ssl_password", "schema_registry_user_info")
_SECRET_VALUES: dict[str, str] = {}


def secret_flag_value(value: Any) -> Any:
    """The secret a placeholder stands for (other values unchanged)."""
    return _SECRET_VALUES.get(value, value) if isinstance(value, str) else value


def hide_secrets(argv: list[str]) -> list[str]:
    """argv with each secret flag's value replaced by a placeholder (`--flag=<redacted-…>`)."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name.lstrip("-") in SECRET_FLAGS and name.startswith("--"):
            if not eq:
                value = next(args, "")
            token = f"<redacted-{uuid.uuid4().hex[:8]}>"
            _SECRET_VALUES[token] = value
            arg = f"{name}={token}"
        out.append(arg)
    return out
