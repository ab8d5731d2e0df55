"""Readers for the image's files (deploy/Dockerfile, its .dockerignore, deploy/requirements*.lock).

Shared by the image tests; plain parsing only, no knowledge of what the files should contain.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "Dockerfile.dockerignore"
LOCK = REPO / "deploy" / "requirements.lock"
LOCK_CU12 = REPO / "deploy" / "requirements-cu12.lock"
DEV_LOCK = REPO / "deploy" / "requirements-dev.lock"
#: The image's torch variants (deploy/Dockerfile's TORCH_VARIANT): each one's lock and the
#: Makefile variables naming its torch pins and its lock file.
VARIANTS = {
    "cu13": (LOCK, "TORCH_PINS", "IMAGE_LOCK"),
    "cu12": (LOCK_CU12, "TORCH_PINS_CU12", "IMAGE_LOCK_CU12"),
}
#: Distributions of torch's own build: the only ones whose versions may differ between variants.
TORCH_BUILD = re.compile(r"torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+")
MAKEFILE = REPO / "Makefile"
RELOCK = "make lock"


@dataclass
class Locked:
    """One pinned distribution of the lock file."""

    name: str
    version: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, Locked]:
    """Parse a pip/uv requirements file with hashes and ``# via`` annotations, by name."""
    entries: dict[str, Locked] = {}
    current: Locked | None = None
    in_via = False
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not line.startswith((" ", "#")):
            tokens = stripped.split()
            name, sep, version = tokens[0].partition("==")
            assert sep, f"{path}: {tokens[0]!r} is not pinned with =="
            current = Locked(canonical(name), version)
            current.hashes = [t.split("=", 1)[1] for t in tokens[1:] if t.startswith("--hash=")]
            assert current.name not in entries, f"{path}: {current.name} is listed twice"
            entries[current.name] = current
            in_via = False
        elif current is not None and stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.append(rest)
        elif current is not None and in_via and stripped.startswith("#   "):
            current.via.append(stripped.removeprefix("#").strip())
    return entries


def makefile_variable(name: str) -> str:
    """The value of a simple ``NAME := value`` assignment in the Makefile."""
    match = re.search(rf"^{name}\s*:?=\s*(.*)$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, f"Makefile has no {name} := ... assignment"
    return match.group(1).strip()


@dataclass
class Instruction:
    """One Dockerfile instruction (continuation lines joined)."""

    keyword: str
    arguments: str


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per ``FROM`` stage (``ARG``s before it dropped)."""
    stages: list[list[Instruction]] = []
    logical = re.sub(r"\\\n", " ", path.read_text())
    for line in logical.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, arguments = stripped.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(arguments.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def copy_sources(stage: list[Instruction]) -> list[tuple[list[str], str, str]]:
    """``(sources, destination, workdir)`` of every build-context ``COPY`` of a stage."""
    copies: list[tuple[list[str], str, str]] = []
    workdir = "/"
    for instruction in stage:
        if instruction.keyword == "WORKDIR":
            workdir = instruction.arguments
        elif instruction.keyword == "COPY":
            words = shlex.split(instruction.arguments)
            if any(word.startswith("--from") for word in words):
                continue
            paths = [word for word in words if not word.startswith("--")]
            copies.append((paths[:-1], paths[-1], workdir))
    return copies


def dockerignore_includes(path: Path = DOCKERIGNORE) -> list[str]:
    """The ``!pattern`` re-inclusions of an ignore-everything (``**``) .dockerignore."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "**", f"{path} must start by ignoring everything (**)"
    return [pattern[1:] for pattern in patterns if pattern.startswith("!")]
