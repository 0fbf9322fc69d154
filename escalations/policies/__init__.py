"""The packaged policies (``default.yaml``, ``demo.yaml``) and where policies are found.

``PolicySource`` resolves a policy name to a file: the configured default file, then
files beside it, then the packaged ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from schemas.policy import Policy, PolicyError, load_policy_file

__all__ = ["PolicySource", "packaged_policy", "packaged_policy_dir"]


def packaged_policy_dir() -> Path:
    return Path(str(resources.files("escalations.policies")))


def packaged_policy(name: str) -> Path:
    return packaged_policy_dir() / f"{name}.yaml"


@dataclass(frozen=True)
class PolicySource:
    """Where policies come from: the default file, then named files beside it or packaged.

    Parsed files are kept by (path, modification time, size), so an edited file is read
    again and an unchanged one is not parsed on every escalation opened.
    """

    default_file: Path
    search_dirs: list[Path] = field(default_factory=list)
    _parsed: dict[Path, tuple[tuple[int, int], Policy]] = field(default_factory=dict, compare=False, repr=False)

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

    def load(self, name: str | None) -> Policy:
        default = self._read(self.default_file)
        if name is None or name == default.name:
            return default
        for folder in self.search_dirs:
            candidate = folder / f"{name}.yaml"
            if candidate.exists():
                policy = self._read(candidate)
                if policy.name != name:
                    raise PolicyError(str(candidate), [f"name: is {policy.name!r}, expected {name!r}"])
                return policy
        searched = ", ".join(str(d) for d in self.search_dirs)
        raise PolicyError(name, [f"no policy named {name!r} (looked for {name}.yaml in {searched})"])
