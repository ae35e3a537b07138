"""What the data layer reports, as typed, frozen records: an import's report and a listed data set.

``cxr.datasets`` returns these (``import_dataset`` -> ``ImportReport``, ``list_datasets`` ->
``DatasetEntry``); the pages and the command line read their attributes. Plain data: no I/O here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImportReport:
    """What an import did: counts, what was skipped and why, duplicates and patient overlaps."""

    name: str
    path: Path
    source: str
    layout: str
    image_size: int
    num_files: int = 0  # image files found in the source
    num_images: int = 0  # images kept in the cache
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> count
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable files: file, reason
    ignored: list[str] = field(default_factory=list)  # entries that are not part of the data set
    duplicate_groups: list[list[str]] = field(default_factory=list)  # byte-identical files
    duplicates_removed: list[str] = field(default_factory=list)
    overlap_removed: list[str] = field(default_factory=list)  # train files of patients also in test
    seconds: float = 0.0
    from_cache: bool = False

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["path"] = str(self.path)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ImportReport:
        """The report stored in ``dataset.json`` (unknown keys, from other versions, are left out)."""
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known} | {"path": Path(values["path"])})

    def summary(self) -> str:
        """A few lines for people: what was read, kept, skipped and removed."""
        lines = [f"Data set {self.name!r} ({self.layout} layout, {self.image_size} px) from {self.source}",
                 f"{self.num_images} images kept of {self.num_files} found"
                 + (" (loaded from cache)" if self.from_cache else f" in {self.seconds:.1f} s")]
        for split, counts in self.counts.items():
            lines.append(f"  {split:5s}: " + ", ".join(f"{cls} {n}" for cls, n in counts.items()))
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable file(s) skipped, e.g. {self.skipped[0]['file']}: "
                         f"{self.skipped[0]['reason']}")
        if self.duplicate_groups:
            lines.append(f"{len(self.duplicate_groups)} group(s) of byte-identical files "
                         f"({sum(map(len, self.duplicate_groups))} files); {len(self.duplicates_removed)} "
                         "extra copies removed")
        if self.overlap_removed:
            lines.append(f"{len(self.overlap_removed)} training image(s) removed: their patient id also appears in "
                         "the test split (no patient may be in two splits)")
        if self.ignored:
            lines.append(f"{len(self.ignored)} entry(ies) ignored, e.g. {self.ignored[0]}")
        return "\n".join(lines)


@dataclass(frozen=True)
class DatasetEntry:
    """One imported data set as ``cxr.datasets.list_datasets`` lists it (from its ``dataset.json``; no arrays)."""

    name: str
    image_size: int | None
    counts: dict[str, dict[str, int]]  # split -> class -> images
    created: str | None
    source: str | None
    num_images: int | None

    def split_size(self, split: str) -> int:
        """Images in ``split`` ("train", "val", "test"); 0 when the data set has none."""
        return sum(self.counts.get(split, {}).values())


__all__ = ["ImportReport", "DatasetEntry"]
