"""Selection: which instances of a batch a run (or validate, a dry run) covers: ``--only``, ``--tags``, ``--exclude``.

Semantics, applied in this order to the batch's instances (batch order is kept):

* ``--only NAME`` (repeatable, or comma-separated): keep the instances named; none given: keep all.
* ``--tags TAG`` (repeatable, or comma-separated): keep the instances that carry at least one of the tags (an
  instance's ``tags`` after ``[defaults]``); none given: no filter.
* ``--exclude NAME`` (repeatable, or comma-separated): drop the instances named.

Guarantees: a name in ``--only``/``--exclude`` that is not an instance of the batch, a tag no instance carries, and
a selection that leaves no instance are each a :class:`~orchestrator_pex.errors.UsageError` (one line, exit 2, with
"did you mean" when a close name exists); nothing is started. A selection is recorded in the run's ``run_started``
event as ``selection`` (the criteria and the selected ``names``), so ``resume`` and ``runs show`` cover exactly the
selected instances.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import attrs

from orchestrator_pex.errors import UsageError, suggestion


def split_words(values: Optional[Iterable[str]]) -> Tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: repeated options and comma-separated lists are the same."""
    out: List[str] = []
    for value in values or ():
        out += [w.strip() for w in value.split(",") if w.strip()]
    return tuple(dict.fromkeys(out))


@attrs.frozen
class Selection:
    only: Tuple[str, ...] = ()
    tags: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()

    @classmethod
    def of(cls, only: Optional[Iterable[str]] = None, tags: Optional[Iterable[str]] = None,
           exclude: Optional[Iterable[str]] = None) -> Selection:
        """The selection of the ``--only``/``--tags``/``--exclude`` values as given (each repeatable, words split on
        commas; see :func:`split_words`). Commands read them through :class:`orchestrator_pex.request.RunOptions`."""
        return cls(only=split_words(only), tags=split_words(tags), exclude=split_words(exclude))

    def __bool__(self) -> bool:
        return bool(self.only or self.tags or self.exclude)

    def names(self, instances: Sequence[Tuple[str, Sequence[str]]]) -> List[str]:
        """The selected names, in batch order, from ``(name, tags)`` pairs; :class:`UsageError` as documented."""
        known = [name for name, _ in instances]
        for option, names in (("--only", self.only), ("--exclude", self.exclude)):
            for name in names:
                if name not in known:
                    raise UsageError(option, "", f"no instance named {name!r}{suggestion(name, known)}")
        all_tags = list(dict.fromkeys(t for _, tags in instances for t in tags))
        for tag in self.tags:
            if tag not in all_tags:
                listed = f" (tags in the batch: {', '.join(all_tags)})" if all_tags else " (no instance has tags)"
                raise UsageError("--tags", "", f"no instance has the tag {tag!r}{suggestion(tag, all_tags) or listed}")
        chosen = [name for name, tags in instances
                  if (not self.only or name in self.only)
                  and (not self.tags or any(t in self.tags for t in tags))
                  and name not in self.exclude]
        if not chosen:
            raise UsageError(self.describe(), "", "this selection leaves no instance to run")
        return chosen

    def describe(self) -> str:
        parts = [f"{flag} {','.join(values)}" for flag, values in
                 (("--only", self.only), ("--tags", self.tags), ("--exclude", self.exclude)) if values]
        return " ".join(parts) or "all instances"

    def record(self, names: Sequence[str]) -> Dict[str, Any]:
        """What ``run_started`` records as ``selection``."""
        return {"only": list(self.only), "tags": list(self.tags), "exclude": list(self.exclude), "names": list(names)}


def apply(plan: Any, selection: Selection) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """``plan`` with only the selected launches, and the ``selection`` record for ``run_started`` (None when no
    selection was asked for: the plan is returned unchanged)."""
    if not selection:
        return plan, None
    names = set(selection.names([(one.name, tuple(one.instance.tags or ())) for one in plan.launches]))
    launches = tuple(one for one in plan.launches if one.name in names)
    return attrs.evolve(plan, launches=launches), selection.record([one.name for one in launches])


def recorded_names(run_meta: Dict[str, Any], names: List[str]) -> List[str]:
    """``names`` restricted to the selection a run recorded in ``run_started`` (all of them when it has none)."""
    sel = run_meta.get("selection")
    chosen = sel.get("names") if isinstance(sel, dict) else None
    if not isinstance(chosen, list):
        return names
    keep = {n for n in chosen if isinstance(n, str)}
    return [n for n in names if n in keep]


def add_arguments(p: Any) -> None:
    """``--only``, ``--tags``, ``--exclude`` for ``run`` and ``validate``."""
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only these instances (repeat, or NAME,NAME); unknown names are an error")
    p.add_argument("--tags", action="append", metavar="TAG",
                   help="run only instances carrying one of these tags (repeat, or TAG,TAG)")
    p.add_argument("--exclude", action="append", metavar="NAME",
                   help="leave these instances out (repeat, or NAME,NAME); unknown names are an error")
