"""The dependency graph of a batch: ``needs``, ``when``, placeholders, ready order and connected components.

Guarantees:

* :func:`problems` lists every one (:func:`validate` raises the first as a one-line
  :class:`~orchestrator_pex.errors.ConfigError` naming the file and key): a ``needs`` entry that names no instance
  of the batch, an instance that needs itself, a ``when`` without ``needs``, a placeholder naming an instance that
  is not in the instance's ``needs``, and a cycle (the first found); a cycle is shown in one line as
  ``a -> b -> c -> a``.
* A *placeholder* is ``{{NAME.FIELD}}`` with FIELD one of :data:`FIELDS` (no spaces). Any other ``{{...}}`` text
  is not a placeholder and is left as it is. :func:`fill` replaces every placeholder in one pass: the inserted
  values are data and are never scanned again (a result that itself contains ``{{a.result}}``, quotes, newlines or
  ``$(...)`` arrives literally). A field the dependency's record does not have (no workspace: no branch) is
  inserted as the empty string.
* :func:`decide` is the whole start rule: with ``when = "success"`` (the default) an instance starts when every
  instance it needs succeeded; ``"on-failure"`` when at least one did not; ``"always"`` once all have finished.
  Otherwise it ends ``skipped`` with an error naming the first dependency that decided it.
* :func:`components` groups instances into connected components of the (undirected) dependency graph; the key of a
  component is its lexicographically smallest name, which is what sharding hashes (a shard holds whole
  components; an instance without dependencies is its own component, keyed by its own name).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from orchestrator_pex.errors import ConfigError
from orchestrator_pex.vocabulary import InstanceStatus

FIELDS = ("result", "session_id", "branch", "head", "status")
WHEN = ("success", "on-failure", "always")
#: ``{{NAME.FIELD}}``: NAME is any instance name (1 to 200 printable characters, "." allowed) holding neither "{{"
#: nor "}}"; the shortest NAME followed by ``.FIELD}}`` wins.
PLACEHOLDER = re.compile(r"\{\{((?:(?!\{\{|\}\})[^\x00-\x1f\x7f-\x9f]){1,200}?)\.(" + "|".join(FIELDS) + r")\}\}")


def placeholders(text: str) -> List[Tuple[str, str]]:
    """Every ``(name, field)`` placeholder in ``text``, in order."""
    return [(m.group(1), m.group(2)) for m in PLACEHOLDER.finditer(text)]


def instance_texts(inst: Any) -> List[Tuple[str, str]]:
    """``(key, text)`` of every field of ``inst`` that may hold placeholders: prompt, argv elements, env values,
    resume."""
    out: List[Tuple[str, str]] = []
    if getattr(inst, "prompt", None) is not None:
        out.append(("prompt", inst.prompt))
    for i, arg in enumerate(getattr(inst, "argv", None) or ()):
        out.append((f"argv[{i}]", arg))
    for key, value in (getattr(inst, "env", None) or {}).items():
        out.append((f"env.{key}", value))
    if getattr(inst, "resume", None) is not None:
        out.append(("resume", inst.resume))
    return out


def validate(instances: Sequence[Any], label: str, defaults_env: Optional[Mapping[str, str]] = None) -> None:
    """Check ``needs``, ``when`` and placeholders of ``instances`` (objects with ``name``, ``needs``, ``when`` and
    the placeholder fields); raise :class:`ConfigError` on the first problem :func:`problems` finds."""
    for key, message in problems(instances, defaults_env):
        raise ConfigError(label, key, message)


def problems(instances: Sequence[Any], defaults_env: Optional[Mapping[str, str]] = None) -> List[Tuple[str, str]]:
    """``(key, message)`` of every problem of ``needs``, ``when`` and placeholders, in file order, then a cycle (the
    first found, once)."""
    out: List[Tuple[str, str]] = []
    index: Dict[str, int] = {}
    for i, inst in enumerate(instances):
        index.setdefault(inst.name, i)
    for i, inst in enumerate(instances):
        needs = tuple(getattr(inst, "needs", None) or ())
        for j, need in enumerate(needs):
            if need == inst.name:
                out.append((f"instances[{i}].needs[{j}]", f'"{need}" is the instance itself'))
            elif need not in index:
                out.append((f"instances[{i}].needs[{j}]", f'no instance is named "{need}"'))
            elif need in needs[:j]:
                out.append((f"instances[{i}].needs[{j}]", f'"{need}" is listed twice'))
        if getattr(inst, "when", None) is not None and not needs:
            out.append((f"instances[{i}].when", "only means something with needs"))
        texts = instance_texts(inst)
        texts += [(f"env.{k} (from [defaults])", v) for k, v in (defaults_env or {}).items()
                  if k not in (getattr(inst, "env", None) or {})]
        for key, text in texts:
            for name, field in placeholders(text):
                if name not in needs:
                    listed = ", ".join(needs) if needs else "nothing"
                    out.append((f"instances[{i}].{key}",
                                f"{{{{{name}.{field}}}}} refers to \"{name}\", which is not in needs "
                                f"(needs {listed})"))
                    break
    # an instance needing itself is reported above, not again as the cycle a -> a
    # (an instance without needs is on no cycle: left out, so 100,000 independent instances build no map)
    cycle = find_cycle({inst.name: tuple(n for n in getattr(inst, "needs", None) or () if n != inst.name)
                        for inst in instances if getattr(inst, "needs", None)})
    if cycle:
        out.append((f"instances[{index[cycle[0]]}].needs", "dependency cycle: " + " -> ".join(cycle)))
    return out


def find_cycle(needs: Mapping[str, Sequence[str]]) -> Optional[List[str]]:
    """A cycle as ``[a, b, ..., a]`` (``a`` needs ``b`` ...), the first found in batch order; None if acyclic."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {n: WHITE for n in needs}
    for start in needs:
        if color[start] != WHITE:
            continue
        path: List[str] = [start]
        stack = [iter(needs.get(start, ()))]
        color[start] = GREY
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = BLACK
                stack.pop()
                continue
            if nxt not in color:
                continue
            if color[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            if color[nxt] == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                stack.append(iter(needs.get(nxt, ())))
    return None


def order(needs: Mapping[str, Sequence[str]]) -> List[str]:
    """The order instances become ready when each runs at once: repeatedly the first (in batch order) whose needs
    are all placed. ``needs`` must be acyclic (:func:`validate`)."""
    placed: Dict[str, None] = {}
    remaining = list(needs)
    while remaining:
        for name in remaining:
            if all(n in placed or n not in needs for n in needs[name]):
                placed[name] = None
                remaining.remove(name)
                break
        else:  # pragma: no cover - validate refuses cycles
            placed.update((n, None) for n in remaining)
            break
    return list(placed)


def levels(needs: Mapping[str, Sequence[str]]) -> Dict[str, int]:
    """Each instance's depth: 0 without needs, else 1 + the deepest instance it needs."""
    depth: Dict[str, int] = {}
    for name in order(needs):
        depth[name] = 1 + max((depth.get(n, 0) for n in needs[name]), default=-1)
    return depth


def components(needs: Mapping[str, Sequence[str]]) -> Dict[str, str]:
    """name -> the key of its connected component (the smallest name in it)."""
    parent = {n: n for n in needs}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for name, deps in needs.items():
        for dep in deps:
            if dep in parent:
                a, b = root(name), root(dep)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    smallest: Dict[str, str] = {}
    for name in needs:
        r = root(name)
        smallest[r] = min(smallest.get(r, name), name)
    return {name: smallest[root(name)] for name in needs}


def dependents(needs: Mapping[str, Sequence[str]], names: Sequence[str]) -> List[str]:
    """Every instance that needs one of ``names``, directly or through others (batch order, ``names`` excluded)."""
    found = set(names)
    changed = True
    while changed:
        changed = False
        for name, deps in needs.items():
            if name not in found and any(d in found for d in deps):
                found.add(name)
                changed = True
    return [n for n in needs if n in found and n not in set(names)]


def decide(when: Optional[str], needs: Sequence[str], records: Mapping[str, Mapping[str, Any]]) -> Optional[str]:
    """None if an instance with these ``needs`` and ``when`` starts, given its dependencies' final ``records``;
    else the error of its ``skipped`` record."""
    when = when or "success"
    if when == "always":
        return None
    failed = [n for n in needs if records[n].get("status") != InstanceStatus.SUCCEEDED]
    if when == "on-failure":
        if failed:
            return None
        return "when = on-failure: every instance it needs succeeded"
    if not failed:
        return None
    first = failed[0]
    status = records[first].get("status")
    return f"needs {first}, which failed" if status == InstanceStatus.FAILED else f"needs {first}, which ended {status}"


def _field(record: Mapping[str, Any], field: str) -> str:
    if field in ("branch", "head"):
        ws = record.get("workspace")
        value = ws.get(field) if isinstance(ws, Mapping) else None
    else:
        value = record.get(field)
    return value if isinstance(value, str) else ""


def fill(text: str, records: Mapping[str, Mapping[str, Any]]) -> str:
    """``text`` with every placeholder replaced by the field of the named record, in one pass (never recursive)."""
    return PLACEHOLDER.sub(lambda m: _field(records[m.group(1)], m.group(2)) if m.group(1) in records
                           else m.group(0), text)
