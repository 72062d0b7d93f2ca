"""Loading a profile file: shipped names, `extends:` chains, the digest of what is in force."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources

from nodeslo.profile import yamlsource
from nodeslo.profile.model import DEFAULT_PROFILE, Profile, ProfileError
from nodeslo.profile.validate import build
from nodeslo.profile.yamlsource import SourceError


def shipped_profile_path(name: str) -> str | None:
    path = resources.files("nodeslo.profiles").joinpath(f"{name}.yaml")
    return str(path) if path.is_file() else None


def _resolve(reference: str, relative_to: str) -> str | None:
    if reference.endswith((".yaml", ".yml")) or os.sep in reference:
        path = os.path.join(relative_to, reference)
        return path if os.path.isfile(path) else None
    return shipped_profile_path(reference)


def load_profile(path: str | None = None) -> Profile:
    """Load and validate a profile file (default: the shipped process-management one)."""
    if path is None:
        path = shipped_profile_path(DEFAULT_PROFILE)
        assert path is not None, "the default profile ships with the package"
    try:
        return _load(path)
    except ProfileError:
        raise
    except SourceError as exc:
        raise ProfileError(exc.file, exc.line, exc.key, exc.message) from None
    except OSError as exc:
        raise ProfileError(path, None, "", exc.strerror or str(exc)) from None
    except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as exc:
        # Whatever slipped past the bounded reader and the validator: still the
        # documented error naming the file, never a traceback or a dead daemon.
        raise ProfileError(path, None, "", f"cannot load: {type(exc).__name__}: {exc}") from None


def _load(path: str) -> Profile:
    tree = yamlsource.resolve_extends(yamlsource.load(path), _resolve)
    # The digest covers the effective profile, parents included, so two hosts
    # with the same sha256 hold the same targets whatever files produced them.
    canonical = json.dumps(tree.plain(), sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return build(tree, path, digest)
