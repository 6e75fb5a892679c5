"""Whether a finished (or started) study run was made with the config the study asks for now.

A run's config is compared *resolved*: every key of every section with the value in force (given
or default), and the strategy's options (``[growth]``) likewise from its options dataclass. The
stored config of an older run is resolved with today's code, so

* a key added since (absent from the stored config) stands at today's default — equal to a study
  that does not set it, different from one that sets another value;
* a default changed since is a difference where the run recorded the old value (every section key
  is recorded in ``config``; the strategy's option defaults in ``resolved_config`` of result files
  written since it exists) — the message names the old value, which the study can set to go on;
* a key the code no longer has is a difference (what it did cannot be compared);
* keys that do not change results (:data:`IGNORED`: progress bars, checkpoint frequency, device)
  are left out.

:func:`config_differences` gives the differing keys with both values (:func:`result_differences` for
a ``result.json``), :func:`differences_line` the one line of a refusal. The runner (which runs to
skip, which to refuse) and the tables (which results to count) use the same check.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pdegrow.errors import PdegrowError

IGNORED = frozenset({"run.progress", "run.checkpoint_every", "run.checkpoint_seconds", "run.device"})
_REMOVED = "<not a key of this version>"


def _plain(v: Any) -> Any:
    return json.loads(json.dumps(v))


def _known_keys(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``values`` without the keys this version does not know, {dotted key: value} of those)."""
    from pdegrow.growth.base import strategy_class, strategy_options
    from pdegrow.training.config import SECTIONS

    kept: dict[str, Any] = {}
    removed: dict[str, Any] = {}
    for name, section in values.items():
        if name == "growth" and isinstance(section, dict):
            try:
                fields = {f.name for f in dataclasses.fields(strategy_options(
                    strategy_class(str(section.get("strategy", "fixed")))))} | {"strategy"}
            except PdegrowError:
                fields = set(section)   # an unknown strategy differs by its name already
        elif name in SECTIONS and isinstance(section, dict):
            fields = {f.name for f in dataclasses.fields(SECTIONS[name])}
        else:
            removed[name] = section
            continue
        kept[name] = {k: v for k, v in section.items() if k in fields}
        removed.update({f"{name}.{k}": v for k, v in section.items() if k not in fields})
    return kept, removed


def resolved_config(values: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """{``section.key``: value in force} for a training config's values (:data:`IGNORED` keys left
    out); a :class:`PdegrowError` when the values are not a valid config of this version."""
    from pdegrow.config import build_dataclass
    from pdegrow.growth.base import strategy_class, strategy_options
    from pdegrow.training.config import build_config

    cfg = build_config(values, source)
    out = {f"{s}.{k}": v for s, section in cfg.to_dict().items() if s != "growth" for k, v in section.items()}
    options = build_dataclass(strategy_options(strategy_class(cfg.strategy)), cfg.growth, source)
    out["growth.strategy"] = cfg.strategy
    out.update({f"growth.{k}": v for k, v in dataclasses.asdict(options).items()})
    return {k: _plain(v) for k, v in out.items() if k not in IGNORED}


def config_differences(stored: dict[str, Any], current: dict[str, Any],
                       stored_resolved: dict[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """{key: (value in the run, value now)} for every key in which the run's config ``stored`` (its
    ``config.json`` or result's ``config``; ``stored_resolved``: the values in force when it ran, where
    recorded) differs from the study's ``current`` config (see the module docstring); {} when equal."""
    kept, removed = _known_keys(stored)
    diffs: dict[str, tuple[Any, Any]] = {k: (v, _REMOVED) for k, v in removed.items()}
    try:
        old = resolved_config(kept, "the run's config")
    except PdegrowError as exc:
        return {**diffs, "config": (str(exc), "valid")}
    for k, v in (stored_resolved or {}).items():
        if k in IGNORED:
            continue
        if k in old:
            old[k] = _plain(v)
        else:
            diffs[k] = (v, _REMOVED)
    new = resolved_config(current, "the study's config")
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            diffs[k] = (old.get(k), new.get(k))
    return dict(sorted(diffs.items()))


def result_differences(result: dict[str, Any], config: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """:func:`config_differences` of a finished run's ``result.json`` (its ``config`` and, where
    recorded, ``resolved_config``) from a study run's ``config``."""
    stored, resolved = result.get("config"), result.get("resolved_config")
    return config_differences(stored if isinstance(stored, dict) else {}, config,
                              resolved if isinstance(resolved, dict) else None)


def differences_line(diffs: dict[str, tuple[Any, Any]], most: int = 4) -> str:
    """``key: A in the run, B now; …`` for the first ``most`` differences (and how many more)."""
    def one(k: str, a: Any, b: Any) -> str:
        if k == "config":
            return f"the run's config is not valid in this version ({a})"
        if b == _REMOVED:
            return f"{k} = {json.dumps(a)} in the run is not a key of this version"
        return f"{k}: {json.dumps(a)} in the run, {json.dumps(b)} now"

    parts = [one(k, a, b) for k, (a, b) in list(diffs.items())[:most]]
    more = f"; and {len(diffs) - most} more" if len(diffs) > most else ""
    return "; ".join(parts) + more


__all__ = ["IGNORED", "config_differences", "differences_line", "resolved_config", "result_differences"]
