"""The one error of the scan: files that could not be read as release notes."""

from __future__ import annotations


class ScanNotesError(Exception):
    """One or more files could not be read as release notes; each problem names its file."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
