"""Split one batch's instances over N independent runs (hosts, Kubernetes pods, Slurm array tasks).

Semantics:

* Shards are numbered ``0 .. N-1`` and written ``I/N`` (``--shard 2/3`` is the third of three).
* Which shard runs an instance depends only on the instance's *name* and on N — never on its position in the batch
  file. The assignment is rendezvous (highest-random-weight) hashing over SHA-256, so it is the same on every host,
  Python version and architecture. Consequences: adding or removing an instance moves no other instance; changing N
  from N to N+1 moves only the instances the new shard takes (about 1/(N+1) of them).
* The split is by hash, not round-robin, so shard sizes vary (30 instances over 3 shards may give 8/10/12). A shard
  may even be empty; running it then is a no-op.
* Dependencies (``needs``): a shard holds whole connected components of the dependency graph. The hashed name of
  an instance is its component's key (:func:`orchestrator_pex.graph.components`: the smallest name in it), so an
  instance without dependencies is placed exactly as before and the instances of one chain always land together.
  ``run --shard`` checks the selection is closed under ``needs`` and refuses it otherwise; ``merge`` refuses
  documents in which an instance needs one recorded in another document.
* Budgets in the batch file are per run, hence per shard, unless the run divides them (``--budget-share auto``
  divides the overall budgets by N).

Where the shard comes from (:func:`shard_from_env`, first match wins):

``ORCHESTRATOR_PEX_SHARD=I/N``
    explicit, for any scheduler.
``JOB_COMPLETION_INDEX`` + ``ORCHESTRATOR_PEX_SHARD_COUNT``
    Kubernetes Indexed Job. Kubernetes exports the pod's index but not ``.spec.completions``, so the manifest must
    set ``ORCHESTRATOR_PEX_SHARD_COUNT`` to the same number as ``completions``.
``SLURM_ARRAY_TASK_ID`` + ``SLURM_ARRAY_TASK_COUNT``
    Slurm job array. The index is ``(TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`` so ``--array=1-8``
    and ``--array=0-14:2`` work; the array must be an evenly stepped range (not a list such as ``1,5,9``).
    ``ORCHESTRATOR_PEX_SHARD_COUNT``, when set, overrides ``SLURM_ARRAY_TASK_COUNT``; without either the count is
    derived from ``SLURM_ARRAY_TASK_MAX``.

What a run records (:func:`recorded`, the one reader of it): ``"shard": {"index": I, "count": N}`` in its
``run_started`` event and results document, both whole numbers (not booleans) with ``0 <= I < N <= MAX_SHARDS``;
``merge``, ``resume``, ``runs`` and the batch lock (:func:`lock_variant`) all read it through that function.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from orchestrator_pex.errors import UsageError
from orchestrator_pex.limits import MAX_SHARDS

ENV_SHARD = "ORCHESTRATOR_PEX_SHARD"
ENV_COUNT = "ORCHESTRATOR_PEX_SHARD_COUNT"


def _weight(name: str, index: int) -> bytes:
    return hashlib.sha256(f"orchestrator-pex-shard\0{index}\0{name}".encode()).digest()


def shard_of(name: str, count: int) -> int:
    """The shard (0-based) that runs instance *name* when the batch is split *count* ways."""
    _check(0, count)
    return max(range(count), key=lambda i: _weight(name, i))


def select(names: Iterable[str], index: int, count: int,
           needs: Optional[Mapping[str, Sequence[str]]] = None) -> list[str]:
    """The names shard *index* of *count* runs, in their original order; with ``needs`` (name -> names it needs)
    whole connected components (each placed by its key).

    The union of ``select(names, i, count)`` over ``i in range(count)`` is *names*, and the selections are disjoint.
    """
    _check(index, count)
    keys = group_keys(needs)
    return [n for n in names if shard_of(keys.get(n, n), count) == index]


def group_keys(needs: Optional[Mapping[str, Sequence[str]]]) -> Dict[str, str]:
    """name -> the name hashed to place it: its dependency component's key (only for names in a component of two
    or more)."""
    if not needs or not any(needs.values()):
        return {}
    from orchestrator_pex.graph import components

    return components(needs)


def _check(index: int, count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SHARDS:
        raise UsageError("shard", "count", f"must be a whole number of at least 1 and at most {MAX_SHARDS}, "
                         f"got {count!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise UsageError("shard", "index", f"must be between 0 and {count - 1} for {count} shards, got {index!r}")


def _int(text: str, what: str) -> int:
    text = text.strip()
    if not text or not (text.isdigit() or (text[0] in "+-" and text[1:].isdigit())) or not text.isascii() \
            or len(text) > 18:
        raise UsageError(what, "", f"expected a whole number (at most 18 digits), got {text[:40]!r}")
    return int(text)


def parse_shard(text: str, what: str = "--shard") -> Tuple[int, int]:
    """Parse ``"I/N"`` (0-based index I of N shards) into ``(I, N)``; UsageError with the accepted form otherwise."""
    parts = str(text).split("/")
    if len(parts) != 2:
        raise UsageError(what, "", f"expected INDEX/COUNT such as 0/3 (index counts from 0), got {text!r}")
    index, count = _int(parts[0], f"{what} index"), _int(parts[1], f"{what} count")
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(what, "", f"the shard count must be at least 1 and at most {MAX_SHARDS}, got {text!r}")
    if not 0 <= index < count:
        raise UsageError(what, "", f"the index counts from 0 and must be below the count ({count}), got {text!r}")
    return index, count


def shard_from_env(environ: Mapping[str, str]) -> Optional[Tuple[int, int]]:
    """The ``(index, count)`` a scheduler assigned this process through its environment, or None (see module doc)."""
    explicit = environ.get(ENV_SHARD, "").strip()
    if explicit:
        return parse_shard(explicit, ENV_SHARD)
    count_override = environ.get(ENV_COUNT, "").strip()
    k8s_index = environ.get("JOB_COMPLETION_INDEX", "").strip()
    if k8s_index:
        if not count_override:
            raise UsageError("JOB_COMPLETION_INDEX", "", f"set (Kubernetes Indexed Job) but {ENV_COUNT} is not: set "
                             "it in the pod template to the Job's .spec.completions")
        return _checked(_int(k8s_index, "JOB_COMPLETION_INDEX"), _int(count_override, ENV_COUNT),
                        "JOB_COMPLETION_INDEX")
    task_id = environ.get("SLURM_ARRAY_TASK_ID", "").strip()
    if task_id:
        tid = _int(task_id, "SLURM_ARRAY_TASK_ID")
        low = _int(environ.get("SLURM_ARRAY_TASK_MIN", "0") or "0", "SLURM_ARRAY_TASK_MIN")
        step = _int(environ.get("SLURM_ARRAY_TASK_STEP", "1") or "1", "SLURM_ARRAY_TASK_STEP")
        if count_override:
            count = _int(count_override, ENV_COUNT)
        elif environ.get("SLURM_ARRAY_TASK_COUNT", "").strip():
            count = _int(environ["SLURM_ARRAY_TASK_COUNT"], "SLURM_ARRAY_TASK_COUNT")
        elif environ.get("SLURM_ARRAY_TASK_MAX", "").strip() and step >= 1:  # Slurm without TASK_COUNT
            count = (_int(environ["SLURM_ARRAY_TASK_MAX"], "SLURM_ARRAY_TASK_MAX") - low) // step + 1
        else:
            raise UsageError("SLURM_ARRAY_TASK_ID", "", f"set but neither SLURM_ARRAY_TASK_COUNT nor {ENV_COUNT} is")
        if step < 1 or (tid - low) % step:
            raise UsageError("SLURM_ARRAY_TASK_ID", "", f"Slurm array task {tid} is not on the range {low}..:{step}: "
                             "use an evenly stepped --array range such as 0-7 or 1-8, not a list")
        return _checked((tid - low) // step, count, "SLURM_ARRAY_TASK_ID")
    return None


def _checked(index: int, count: int, source: str) -> Tuple[int, int]:
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(source, "", f"the shard count must be at least 1 and at most {MAX_SHARDS}, got {count}")
    if not 0 <= index < count:
        raise UsageError(source, "", f"shard index {index} is outside 0..{count - 1} ({count} shards)")
    return index, count


def recorded(value: Any) -> Optional[Tuple[int, int]]:
    """``(index, count)`` of the ``shard`` a run recorded, None for an unsharded run (``None``). ``ValueError``
    naming the expected form for anything else (not an object; an index or count that is not a whole number, or a
    boolean; not ``0 <= I < N <= MAX_SHARDS``)."""
    if value is None:
        return None
    if isinstance(value, dict):
        index, count = value.get("index"), value.get("count")
        if isinstance(index, int) and isinstance(count, int) and not isinstance(index, bool) \
                and not isinstance(count, bool) and 0 <= index < count <= MAX_SHARDS:
            return index, count
    raise ValueError(f"must be {{\"index\": I, \"count\": N}} with 0 <= I < N <= {MAX_SHARDS}, got {value!r:.200}")


def lock_variant(where: Optional[Tuple[int, int]]) -> Optional[str]:
    """Shards of one batch on one host lock separately: ``shard-I-of-N`` (None for an unsharded run)."""
    return None if where is None else f"shard-{where[0]}-of-{where[1]}"


def restrict(plan: Any, where: Tuple[int, int], share_budget: bool) -> Tuple[Any, dict]:
    """``(plan, meta)``: only shard ``where`` = (index, count) of ``plan`` (a :class:`plan.Plan`), whole dependency
    components together; with ``share_budget`` the overall budgets divided by count. ``meta`` is what the run
    records (``{"shard": ...}``)."""
    import attrs

    index, count = where
    needs = {launch.name: launch.instance.needs or () for launch in plan.launches}
    names = set(select([launch.name for launch in plan.launches], index, count, needs))
    for name in names:  # a shard holds whole dependency components (select guarantees it; refuse otherwise)
        outside = [n for n in needs[name] if n not in names]
        if outside:
            raise UsageError(f"--shard {index}/{count}", "", f"{name} needs {outside[0]}, which another shard would "
                             "run: a shard must hold whole connected components of the dependency graph")
    batch = plan.batch
    if share_budget:
        budget = batch.budget
        batch = attrs.evolve(batch, budget=attrs.evolve(
            budget,
            max_tokens=budget.max_tokens // count if budget.max_tokens else None,
            max_cost_usd=budget.max_cost_usd / count if budget.max_cost_usd else None,
        ))
    launches = tuple(launch for launch in plan.launches if launch.name in names)
    return attrs.evolve(plan, batch=batch, launches=launches), {"shard": {"index": index, "count": count}}
