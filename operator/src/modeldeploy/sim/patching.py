"""Patch formats of the Kubernetes API: merge patch, strategic merge patch, JSON patch, server-side apply.

Everything here is pure: functions take JSON-like values and return new ones, never mutating their input.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

__all__ = [
    "FieldPath",
    "PatchError",
    "apply_merge",
    "field_paths",
    "fields_from_v1",
    "fields_to_v1",
    "get_path",
    "json_patch",
    "merge_patch",
    "prune_paths",
    "strategic_merge_patch",
]

# One owned field: ("f:spec", "f:replicas") or ("f:spec", "f:containers", 'k:{"name":"main"}', "f:image").
FieldPath = tuple[str, ...]

# Metadata fields that the server manages: never owned by a field manager.
_SERVER_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
# Lists of maps merged by key (strategic merge patch and server-side apply). Everything else is atomic.
_MERGE_KEYS = ("name",)
_SMP_MERGE_KEYS = ("name", "type", "containerPort", "uid")


class PatchError(ValueError):
    """A patch that cannot be applied to the object (bad shape, failed test, missing path)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(items: list[Any], candidates: Iterable[str]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in candidates:
        if all(key in item for item in items if item.get("$patch") != "replace"):
            return key
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch, approximated: a merge patch where lists of maps merge by their key.

    Lists of maps merge by ``name`` (containers, env, volumes, ...), ``type`` (conditions), ``containerPort``
    or ``uid``; a list element ``{"$patch": "delete", <key>: ...}`` removes that element, a map with
    ``"$patch": "replace"`` replaces instead of merging, ``"$patch": "delete"`` deletes the map. Other
    ``$``-directives are dropped.
    """
    if not isinstance(patch, dict):
        if isinstance(patch, list):
            return [_strip_directives(item) for item in patch]
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return None
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(current, list):
            merge_key = _merge_key(value + current, _SMP_MERGE_KEYS)
            if merge_key is None:
                result[key] = [_strip_directives(item) for item in value]
            else:
                result[key] = _merge_list_by_key(current, value, merge_key)
        else:
            merged = strategic_merge_patch(current, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list_by_key(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = copy.deepcopy(current)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_strip_directives(item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return copy.deepcopy(value)


# --- RFC 6902 JSON patch ---


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index: {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index out of range: {index}")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path not found: /{'/'.join(tokens)}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError(f"path not found: /{'/'.join(tokens)}")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add to a scalar at /{'/'.join(tokens)}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, allow_end=False)]
    else:
        raise PatchError(f"path not found: /{'/'.join(tokens)}")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test. Raises :class:`PatchError`."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    result = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"invalid JSON patch operation: {operation!r}")
        op = operation["op"]
        tokens = _pointer(operation["path"])
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"operation {op!r} needs a value")
        if op == "add":
            result = _add(result, tokens, copy.deepcopy(operation["value"]))
        elif op == "remove":
            result = _remove(result, tokens)
        elif op == "replace":
            _get(result, tokens)
            result = (
                _add(_remove(result, tokens), tokens, copy.deepcopy(operation["value"]))
                if tokens
                else (copy.deepcopy(operation["value"]))
            )
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from"))
            value = copy.deepcopy(_get(result, source))
            if op == "move":
                if tokens[: len(source)] == source and tokens != source:
                    raise PatchError("cannot move a value into its own child")
                result = _remove(result, source)
            result = _add(result, tokens, value)
        elif op == "test":
            if _get(result, tokens) != operation["value"]:
                raise PatchError(f"test failed at {operation['path']}")
        else:
            raise PatchError(f"unknown JSON patch operation: {op!r}")
    return result


# --- server-side apply ---


def _keyed(items: list[Any]) -> bool:
    return _merge_key(items, _MERGE_KEYS) is not None and all(isinstance(i.get("name"), str) for i in items)


def _element_token(item: dict[str, Any]) -> str:
    return "k:" + json.dumps({"name": item["name"]}, separators=(",", ":"))


def field_paths(obj: Any, *, status_only: bool = False, with_status: bool = True) -> set[FieldPath]:
    """The set of leaf fields an applied configuration sets (what its field manager owns).

    Maps recurse, lists of maps that all carry a ``name`` recurse by name, everything else (scalars, other
    lists, empty maps) is a leaf. Server-managed metadata, ``apiVersion`` and ``kind`` are not owned.
    """
    paths: set[FieldPath] = set()
    if not isinstance(obj, dict):
        return paths
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if status_only and key != "status":
            continue
        if not status_only and key == "status" and not with_status:
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _SERVER_METADATA}
            if not value:
                continue
        _collect(value, ("f:" + key,), paths)
    return paths


def _collect(value: Any, prefix: FieldPath, paths: set[FieldPath]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _collect(child, (*prefix, "f:" + key), paths)
    elif isinstance(value, list) and value and _keyed(value):
        for item in value:
            _collect(item, (*prefix, _element_token(item)), paths)
    else:
        paths.add(prefix)


def fields_to_v1(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """Render owned fields as the ``fieldsV1`` tree of ``metadata.managedFields``."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for token in path:
            node = node.setdefault(token, {})
            if token.startswith("k:"):
                node.setdefault(".", {})
    return tree


def fields_from_v1(tree: Any) -> set[FieldPath]:
    """Parse a ``fieldsV1`` tree back into the owned leaf fields."""
    paths: set[FieldPath] = set()

    def walk(node: Any, prefix: FieldPath) -> None:
        children = {k: v for k, v in node.items() if k != "."} if isinstance(node, dict) else {}
        if not children:
            if prefix:
                paths.add(prefix)
            return
        for key, child in children.items():
            walk(child, (*prefix, key))

    walk(tree, ())
    return paths


def _find_element(items: list[Any], token: str) -> int | None:
    wanted = json.loads(token[2:])
    for index, item in enumerate(items):
        if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
            return index
    return None


def get_path(obj: Any, path: FieldPath) -> tuple[bool, Any]:
    """The value at an owned field path: ``(found, value)``."""
    node = obj
    for token in path:
        if token.startswith("f:") and isinstance(node, dict) and token[2:] in node:
            node = node[token[2:]]
        elif token.startswith("k:") and isinstance(node, list):
            index = _find_element(node, token)
            if index is None:
                return False, None
            node = node[index]
        else:
            return False, None
    return True, node


def apply_merge(live: Any, applied: Any) -> Any:
    """Merge an applied configuration into the live object (server-side apply, before pruning)."""
    if not isinstance(applied, dict) or not isinstance(live, dict):
        return copy.deepcopy(applied)
    result = copy.deepcopy(live)
    for key, value in applied.items():
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and value and isinstance(current, dict):
            result[key] = apply_merge(current, value)
        elif isinstance(value, list) and value and isinstance(current, list) and _keyed(value) and _keyed(current):
            merged = copy.deepcopy(current)
            for item in value:
                index = _find_element(merged, _element_token(item))
                if index is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[index] = apply_merge(merged[index], item)
            result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    return result


def prune_paths(obj: dict[str, Any], remove: set[FieldPath], keep: set[FieldPath]) -> dict[str, Any]:
    """Remove fields a manager no longer applies; then drop maps, keyed elements and lists left empty.

    A container is dropped only when nothing in ``keep`` lives at or below it.
    """
    result = copy.deepcopy(obj)
    kept_prefixes = {path[:i] for path in keep for i in range(1, len(path) + 1)}
    # The merge key of a keyed list element goes last: the element goes when nothing else is left in it.
    ordered = sorted(remove, key=lambda path: (_is_element_key(path), -len(path)))
    for path in ordered:
        if _is_element_key(path):
            found, element = get_path(result, path[:-1])
            if path[:-1] in kept_prefixes or not found or not isinstance(element, dict):
                continue
            if set(element) - {"name"}:
                continue
            path = path[:-1]
        _remove_field(result, path)
        for depth in range(len(path) - 1, 0, -1):
            ancestor = path[:depth]
            if ancestor in kept_prefixes:
                break
            found, value = get_path(result, ancestor)
            if not found or value not in ({}, []):
                break
            _remove_field(result, ancestor)
    return result


def _is_element_key(path: FieldPath) -> bool:
    return len(path) >= 2 and path[-1] == "f:name" and path[-2].startswith("k:")


def _remove_field(obj: Any, path: FieldPath) -> None:
    found, parent = get_path(obj, path[:-1])
    if not found:
        return
    token = path[-1]
    if token.startswith("f:") and isinstance(parent, dict):
        parent.pop(token[2:], None)
    elif token.startswith("k:") and isinstance(parent, list):
        index = _find_element(parent, token)
        if index is not None:
            del parent[index]
