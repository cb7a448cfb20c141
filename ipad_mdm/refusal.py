"""A refusal of bad input or of an action, said in English (API answers, logs, CLI) and in Vietnamese (the
console, for people who read the office's language). Packages raise their own subclasses; pages show
`exc.message(lang)`, so no English text reaches a Vietnamese page."""
from __future__ import annotations


class Refusal(ValueError):
    def __init__(self, message: str, vi: str | None = None):
        super().__init__(message)
        self.vi = vi or message

    def message(self, lang: str) -> str:
        return self.vi if lang == "vi" else str(self)
