"""The packaged policies (``default.yaml``, ``demo.yaml``) and where policies are found.

``PolicySource`` resolves a policy name to a file: the configured default file, then
files beside it, then the packaged ones. A name is a slug (``POLICY_NAME_PATTERN``), never a
path, and only a file that is a valid policy of that very name counts: what a request may
name is the set ``known()`` lists. An unknown name is refused with that list; no directory
and nothing of a file that is not a policy is ever repeated to the caller.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from schemas.escalation import POLICY_NAME_PATTERN
from schemas.policy import Policy, PolicyError, load_policy_file

__all__ = ["PolicySource", "UnknownPolicy", "packaged_policy", "packaged_policy_dir"]

log = logging.getLogger("escalations.policies")
_POLICY_NAME = re.compile(POLICY_NAME_PATTERN)


def packaged_policy_dir() -> Path:
    return Path(str(resources.files("escalations.policies")))


def packaged_policy(name: str) -> Path:
    return packaged_policy_dir() / f"{name}.yaml"


class UnknownPolicy(PolicyError):
    """A request named a policy outside the known set; ``known`` lists the set."""

    def __init__(self, name: str, known: list[str]) -> None:
        shown = repr(name) if _POLICY_NAME.match(name) else "(not a policy name: a slug, never a path)"
        self.name = name
        self.known = known
        self.source = name
        self.problems = [f"unknown policy {shown}"]
        ValueError.__init__(self, f"unknown policy {shown}; known policies: {', '.join(known) or 'none'}")


@dataclass(frozen=True)
class PolicySource:
    """Where policies come from: the default file, then named files beside it or packaged.

    Parsed files are kept by (path, modification time, size), so an edited file is read
    again and an unchanged one is not parsed on every escalation opened.
    """

    default_file: Path
    search_dirs: list[Path] = field(default_factory=list)
    _parsed: dict[Path, tuple[tuple[int, int], Policy]] = field(default_factory=dict, compare=False, repr=False)
    _warned: set[tuple[Path, int]] = field(default_factory=set, compare=False, repr=False)

    def _read(self, path: Path) -> Policy:
        try:
            stat = path.stat()
        except OSError as exc:
            raise PolicyError(str(path), [f"cannot read file: {exc.strerror}"]) from None
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._parsed.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        policy = load_policy_file(path)
        self._parsed[path] = (version, policy)
        return policy

    @classmethod
    def from_setting(cls, policy_file: str | None) -> "PolicySource":
        default = Path(policy_file).resolve() if policy_file else packaged_policy("default")
        dirs = [default.parent]
        if packaged_policy_dir() not in dirs:
            dirs.append(packaged_policy_dir())
        return cls(default_file=default, search_dirs=dirs)

    def _named(self, name: str) -> Policy | None:
        """The first valid policy file ``<name>.yaml`` of that name in the search dirs."""
        for folder in self.search_dirs:
            candidate = folder / f"{name}.yaml"
            if not candidate.is_file():
                continue
            try:
                policy = self._read(candidate)
            except PolicyError as err:
                # The operator's problem, not the caller's: the log says why, the caller hears "unknown".
                self._warn(candidate, f"is not a usable policy, so {name!r} is not offered: "
                                      + " ".join(str(err).split())[:500])
                continue
            if policy.name == name:
                return policy
            self._warn(candidate, f"is named {policy.name!r} inside, so it is not offered as {name!r}")
        return None

    def _warn(self, path: Path, problem: str) -> None:
        """Once per version of a file: callers asking again and again never flood the log."""
        try:
            version = path.stat().st_mtime_ns
        except OSError:
            version = 0
        if (path, version) not in self._warned:
            self._warned.add((path, version))
            log.warning("policy file %s %s", path, problem)

    def known(self) -> list[str]:
        """The names a request may give: the default policy's, and each valid ``<name>.yaml``
        of that name beside it or packaged."""
        names = {self._read(self.default_file).name}
        for folder in self.search_dirs:
            try:
                stems = {path.stem for path in folder.glob("*.yaml")}
            except OSError:
                continue  # a search dir that went away offers nothing
            for stem in sorted(stems - names):
                if _POLICY_NAME.match(stem) and self._named(stem) is not None:
                    names.add(stem)
        return sorted(names)

    def load(self, name: str | None) -> Policy:
        """The default policy (``name`` None or its name) or the named one; ``UnknownPolicy``
        for any other name. A broken default file raises ``PolicyError`` naming its keys."""
        default = self._read(self.default_file)
        if name is None or name == default.name:
            return default
        policy = self._named(name) if _POLICY_NAME.match(name) else None
        if policy is None:
            raise UnknownPolicy(name, self.known())
        return policy
