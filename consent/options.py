"""The choices offered on forms, loaded once from ``data/options.toml``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PREFER_NOT_TO_SAY = "Prefer not to say"
_FILE = Path(__file__).resolve().parent / "data" / "options.toml"


@dataclass(frozen=True)
class SpecialQuestion:
    key: str
    label: str
    options: tuple[str, ...]
    free_text: bool


@dataclass(frozen=True)
class Options:
    districts: tuple[str, ...]
    job_roles: tuple[str, ...]
    age_bands: tuple[str, ...]
    family_hub_services: tuple[str, ...]
    special_category: tuple[SpecialQuestion, ...]

    def special(self, key: str) -> SpecialQuestion:
        for question in self.special_category:
            if question.key == key:
                return question
        raise KeyError(key)


@cache
def options() -> Options:
    data = tomllib.loads(_FILE.read_text(encoding="utf-8"))
    return Options(
        districts=tuple(data["districts"]),
        job_roles=tuple(data["job_roles"]),
        age_bands=tuple(data["age_bands"]),
        family_hub_services=tuple(data["family_hub_services"]),
        special_category=tuple(
            SpecialQuestion(
                q["key"], q["label"], tuple(q.get("options", [])), bool(q.get("free_text", False))
            )
            for q in data["special_category"]
        ),
    )
