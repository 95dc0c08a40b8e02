"""Command tasks' configuration: the spec of a command (argv, placeholders, environment,
limits) and the validation of its payloads. Run by `command.run_command`."""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import ConfigurationError, ValidationError
from .task import AnyPayload

DEFAULT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
OUTPUT_LIMIT = 1_000_000
_FORMATTER = string.Formatter()


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """How to run one command task (see the module docstring)."""

    argv: tuple[str, ...]
    shell: bool = False
    stdin: bool = True
    env: tuple[str, ...] = DEFAULT_ENV
    extra_env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    output_limit: int = OUTPUT_LIMIT
    kill_grace: float = 5.0
    memory_limit: int | None = None  # bytes of address space (RLIMIT_AS)
    cpu_limit: int | None = None  # seconds of CPU time (RLIMIT_CPU)

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise ConfigurationError("command must be a non-empty list of strings (argv)")
        if self.shell and len(self.argv) != 1:
            raise ConfigurationError("with shell=True give the command as one string")
        if not isinstance(self.output_limit, int) or self.output_limit < 1024:
            raise ConfigurationError(
                f"output_limit must be >= 1024 bytes, got {self.output_limit!r}"
            )
        if not self.kill_grace >= 0:
            raise ConfigurationError(f"kill_grace must be >= 0 seconds, got {self.kill_grace!r}")
        for name, v in (("memory_limit", self.memory_limit), ("cpu_limit", self.cpu_limit)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigurationError(f"{name} must be a positive integer, got {v!r}")
        for k in self.extra_env:
            if not isinstance(k, str) or not k or "=" in k:
                raise ConfigurationError(f"extra_env: invalid variable name {k!r}")
        self.fields()  # placeholders must parse

    @classmethod
    def parse(cls, command: str | Sequence[str], **options: Any) -> CommandSpec:
        """``"python ingest.py {path}"`` (split like a shell would, no shell runs) or a list."""
        if isinstance(command, str):
            if options.get("shell"):
                return cls((command,), **options)
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise ConfigurationError(f"command {command!r}: {exc}") from None
            return cls(argv, **options)
        return cls(tuple(command), **options)

    def fields(self) -> set[str]:
        """Payload fields referenced as ``{field}`` in the arguments."""
        names: set[str] = set()
        for arg in self.argv:
            try:
                for _, name, spec, conv in _FORMATTER.parse(arg):
                    if name is None:
                        continue
                    if not name.isidentifier() or spec or conv:
                        raise ConfigurationError(
                            f"command argument {arg!r}: use plain {{field}} placeholders "
                            "(write {{ and }} for literal braces)"
                        )
                    names.add(name)
            except ValueError as exc:
                raise ConfigurationError(f"command argument {arg!r}: {exc}") from None
        return names

    def render(self, payload: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The argv to run, and the variables it needs. With ``shell=True`` a placeholder
        becomes ``"${CONVEYOR_ARG_<field>}"`` and its value an environment variable: the shell
        expands it as data, never as code, whatever quotes surround the placeholder."""
        values = {k: _arg_value(k, payload[k], self.shell) for k in self.fields()}
        if not self.shell:
            return [a.format_map(values) for a in self.argv], {}
        refs = {k: f'"${{CONVEYOR_ARG_{k}}}"' for k in values}
        env = {f"CONVEYOR_ARG_{k}": v for k, v in values.items()}
        return ["/bin/sh", "-c", self.argv[0].format_map(refs)], env


def _arg_value(name: str, value: Any, shell: bool) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
        raise ValidationError(
            f"payload field {name!r} is used in the command line and must be a string or a "
            f"number, got {type(value).__name__}",
            field=f"payload.{name}",
        )
    text = str(value)
    if "\x00" in text:
        raise ValidationError(
            f"payload field {name!r} is used in the command line and cannot hold NUL characters",
            field=f"payload.{name}",
        )
    return text


class CommandPayload(AnyPayload):
    """Payload validation for a command task: any JSON object holding the placeholders' fields."""

    def __init__(self, name: str, spec: CommandSpec) -> None:
        super().__init__(name)
        self._spec = spec
        self._fields = sorted(spec.fields())

    def validate(self, payload: Any) -> dict[str, Any]:
        payload = super().validate(payload)
        for f in self._fields:
            if f not in payload:
                raise ValidationError(
                    f"command task {self._name!r}: missing required field 'payload.{f}' "
                    "(used in its command line)",
                    field=f"payload.{f}",
                )
            _arg_value(f, payload[f], self._spec.shell)
        try:
            orjson.dumps(payload)
        except TypeError as exc:
            raise ValidationError(f"payload is not JSON: {exc}", field="payload") from None
        return payload

    def json_schema(self) -> dict[str, Any] | None:
        return {"type": "object", "required": list(self._fields)}
