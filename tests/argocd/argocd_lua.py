"""Argo CD's Lua environment, emulated with lupa for testing resource customizations.

What Argo CD (util/lua/lua.go) gives a custom health check or action, reproduced here:
- Lua 5.1 (gopher-lua), with only the base, package and table libraries and a "safe" os library holding
  ``os.time`` and ``os.date`` (also reachable through ``require("os")``). No ``string``, ``math``, ``io``.
- The resource as the global ``obj``, decoded from JSON: every number is a float64.
- Action parameters (Argo CD 3.1 and later) as the global ``actionParams``, a table of strings.
- The script's return value is encoded to JSON: an empty table becomes ``[]``, and for actions
  ``cleanReturnedObj`` turns such an empty array back into ``{}`` where the input had an object.
- Health statuses other than the six Argo CD knows become Unknown.

The clock is frozen (``NOW``) so that outputs holding timestamps are reproducible.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HEALTH_CODES = ("Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing")
REMOVED_LIBRARIES = ("string", "math", "io", "debug", "coroutine")

# gopher-lua's strftime flags (oslib_safe.go), as Python strftime directives.
_DATE_FLAGS = {
    "b": "%b",
    "B": "%B",
    "A": "%A",
    "c": "%d %b %y %H:%M %Z",
    "d": "%d",
    "F": "%Y-%m-%d",
    "H": "%H",
    "I": "%I",
    "m": "%m",
    "M": "%M",
    "p": "%p",
    "S": "%S",
    "x": "%H/%M/%S",
    "X": "%H:%M:%S",
    "y": "%y",
    "Y": "%Y",
    "z": "%z",
    "Z": "%Z",
}


class LuaScriptError(Exception):
    """The script raised an error or returned something Argo CD would refuse."""


def _strftime(moment: datetime, fmt: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(fmt):
        char = fmt[i]
        if char == "%" and i + 1 < len(fmt):
            flag = fmt[i + 1]
            if flag == "%":
                out.append("%")
            elif flag == "a":
                out.append("mon")  # gopher-lua maps %a to the Go layout "mon", printed literally
            elif flag == "w":
                out.append(str((moment.weekday() + 1) % 7))
            elif flag in _DATE_FLAGS:
                out.append(moment.strftime(_DATE_FLAGS[flag]))
            else:
                out.append("%" + flag)
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


class ArgoLua:
    """One Lua state per script run, as Argo CD does."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def _runtime(self) -> Any:
        runtime = lua51.LuaRuntime(unpack_returned_tuples=False, register_eval=False, register_builtins=False)
        g = runtime.globals()
        for name in REMOVED_LIBRARIES:
            g[name] = None
        g.python = None
        os_table = runtime.table_from({"time": self._os_time, "date": self._make_os_date(runtime)})
        g.os = os_table
        g.package.loaded["os"] = os_table
        return runtime

    def _os_time(self, *args: Any) -> int:
        if args:
            raise LuaScriptError("os.time with a table is not used by these scripts")
        return int(self.now.timestamp())

    def _make_os_date(self, runtime: Any) -> Any:
        def os_date(fmt: str = "%c", when: float | None = None) -> Any:
            moment = self.now
            if fmt.startswith("!"):
                fmt = fmt.lstrip("!")
            if when is not None:
                moment = datetime.fromtimestamp(int(when), tz=UTC)
            if fmt.startswith("*t"):
                return runtime.table_from(
                    {
                        "year": moment.year,
                        "month": moment.month,
                        "day": moment.day,
                        "hour": moment.hour,
                        "min": moment.minute,
                        "sec": moment.second,
                        "wday": (moment.weekday() + 1) % 7 + 1,
                        "yday": 0,
                        "isdst": False,
                    }
                )
            return _strftime(moment, fmt)

        return os_date

    # -- conversions

    def _to_lua(self, runtime: Any, value: Any) -> Any:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, dict):
            table = runtime.table()
            for key, item in value.items():
                if item is not None:
                    table[str(key)] = self._to_lua(runtime, item)
            return table
        if isinstance(value, list):
            table = runtime.table()
            for index, item in enumerate(value, start=1):
                table[index] = self._to_lua(runtime, item)
            return table
        raise TypeError(f"cannot pass {type(value).__name__} to Lua")

    def _from_lua(self, value: Any) -> Any:
        """Like gopher-json's Encode: arrays for tables with keys 1..n (and for empty tables)."""
        if lupa_typeof(value) != "table":
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return value
        keys = list(value.keys())
        if all(isinstance(k, int | float) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
            return [self._from_lua(value[i]) for i in range(1, len(keys) + 1)]
        if any(not isinstance(k, str) for k in keys):
            raise LuaScriptError(f"table mixes array and object keys: {keys!r}")
        return {k: self._from_lua(value[k]) for k in keys}

    def run(self, script: str, obj: dict[str, Any], params: dict[str, str] | None = None) -> Any:
        runtime = self._runtime()
        g = runtime.globals()
        g.obj = self._to_lua(runtime, obj)
        if params is not None:
            g.actionParams = runtime.table_from(params)
        try:
            result = runtime.execute(script)
        except lua51.LuaError as error:
            raise LuaScriptError(str(error)) from error
        if lupa_typeof(result) != "table":
            raise LuaScriptError(f"expect table output from Lua script, not {lupa_typeof(result)}")
        return self._from_lua(result)

    # -- what Argo CD does with each kind of script

    def health(self, script: str, obj: dict[str, Any]) -> dict[str, str]:
        result = self.run(script, obj)
        if not isinstance(result, dict) or result.get("status") not in HEALTH_CODES:
            return {"status": "Unknown", "message": "Lua returned an invalid health status"}
        return {"status": str(result["status"]), "message": str(result.get("message", ""))}

    def action(self, script: str, obj: dict[str, Any], params: dict[str, str] | None = None) -> dict[str, Any]:
        result = self.run(script, obj, params)
        if not isinstance(result, dict):
            raise LuaScriptError("an action must return the modified object")
        cleaned = clean_returned_obj(result, obj)
        assert isinstance(cleaned, dict)
        return cleaned

    def discovery(self, script: str, obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
        result = self.run(script, obj)
        if result == []:
            return {}
        if not isinstance(result, dict):
            raise LuaScriptError("discovery must return a table of actions")
        actions: dict[str, dict[str, Any]] = {}
        for name, value in result.items():
            action = value if isinstance(value, dict) else {}
            actions[name] = {**action, "disabled": action.get("disabled") is True}
        return actions


def lupa_typeof(value: Any) -> str:
    return str(lua51.lua_type(value) or "python")


def clean_returned_obj(new: Any, old: Any) -> Any:
    """Argo CD's cleanReturnedObj: an empty array where the input had an object becomes that object."""
    if isinstance(new, dict) and isinstance(old, dict):
        for key, old_value in old.items():
            if key not in new:
                continue
            new_value = new[key]
            if isinstance(new_value, dict) and isinstance(old_value, dict):
                new[key] = clean_returned_obj(new_value, old_value)
            elif isinstance(new_value, list):
                if isinstance(old_value, dict) and not new_value:
                    new[key] = old_value
                elif isinstance(old_value, list):
                    new[key] = [
                        clean_returned_obj(n, o) if i < len(old_value) else n
                        for i, (n, o) in enumerate(zip(new_value, old_value + [None] * len(new_value), strict=False))
                    ]
    return new


def read_script(path: Path) -> str:
    return path.read_text(encoding="utf-8")
