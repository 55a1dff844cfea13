"""Every request body the soak sends, built once before the load starts.

Ordinary photos, expensive-but-valid files and hostile files all come from the hostile-input
corpus (``tests/hostile/corpus.py``), imported lazily so the harness's pure parts work without
it; ``--photos DIR`` swaps the corpus's synthetic photos for real JPEGs. Phone-sized photos are
the ordinary ones re-encoded at 4032x3024 the way the serving benchmark does it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from benchmarks.serving.fixtures import PHONE_SIZE, reencode
from benchmarks.serving.multipart import BOUNDARY, content_type, multipart_body

DEFAULT_CORPUS = "tests.hostile.corpus"
PREDICT, BATCH = "/v1/predict", "/v1/predict/batch"


class CorpusMissing(RuntimeError):
    pass


@dataclass
class Payload:
    kind: str
    name: str
    path: str  # URL path
    body: bytes
    files: int = 1
    file_bytes: int = 0
    content_type: str = field(default_factory=content_type)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": self.path,
            "files": self.files,
            "file_bytes": self.file_bytes,
            "body_bytes": len(self.body),
        }


def load_corpus(module: str = DEFAULT_CORPUS) -> ModuleType:
    # The corpus encodes HEIC with Pillow, which needs pillow-heif's plugin; under pytest the
    # service's own modules register it, in this harness nothing else would.
    with contextlib.suppress(ImportError):
        from pillow_heif import register_heif_opener

        register_heif_opener()
    try:
        corpus = importlib.import_module(module)
    except ImportError as exc:
        raise CorpusMissing(
            f"cannot import the input corpus {module!r} ({exc}); it provides ordinary_photo(), "
            f"expensive_files() and hostile_files() (tests/hostile/corpus.py, issue 8). "
            f"Pass --corpus MODULE to use another module with those three functions."
        ) from exc
    missing = [
        name
        for name in ("ordinary_photo", "expensive_files", "hostile_files")
        if not callable(getattr(corpus, name, None))
    ]
    if missing:
        raise CorpusMissing(f"corpus module {module!r} lacks {missing}")
    return corpus


def multipart_files(field_name: str, files: list[tuple[str, bytes]]) -> bytes:
    """Several file parts under one field name: what ``curl -F files=@a -F files=@b`` sends."""
    parts = []
    for filename, data in files:
        one = multipart_body(field_name, filename, data)  # checks the boundary is not in data
        parts.append(one[: -len(f"--{BOUNDARY}--\r\n")])
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _single(kind: str, name: str, data: bytes) -> Payload:
    return Payload(kind, name, PREDICT, multipart_body("file", name, data), file_bytes=len(data))


def ordinary_photos(corpus: ModuleType | None, count: int, photo_dir: Path | None) -> list[bytes]:
    if photo_dir is not None:
        paths = sorted(photo_dir.glob("*.jpg"))[:count]
        if not paths:
            raise CorpusMissing(f"no *.jpg in {photo_dir}")
        return [p.read_bytes() for p in paths]
    assert corpus is not None
    return [corpus.ordinary_photo(seed) for seed in range(count)]


def build_payloads(
    corpus_module: str = DEFAULT_CORPUS,
    photo_count: int = 16,
    phone_count: int = 4,
    batch_size: int = 4,
    photo_dir: Path | None = None,
) -> dict[str, list[Payload]]:
    """kind -> payloads; every kind of :data:`benchmarks.soak.mix.KINDS` has at least one."""
    corpus = load_corpus(corpus_module)
    try:
        return _build(corpus, photo_count, phone_count, batch_size, photo_dir)
    except CorpusMissing:
        raise
    except Exception as exc:  # the corpus is test code: say where it broke, not a traceback
        raise CorpusMissing(f"building payloads from {corpus_module!r} failed: {exc!r}") from exc


def _build(
    corpus: ModuleType, photo_count: int, phone_count: int, batch_size: int, photo_dir: Path | None
) -> dict[str, list[Payload]]:
    photos = ordinary_photos(corpus, photo_count, photo_dir)
    names = [f"photo-{i:02d}.jpg" for i in range(len(photos))]
    by_kind: dict[str, list[Payload]] = {
        "photo": [_single("photo", n, d) for n, d in zip(names, photos, strict=True)]
    }
    phones = [reencode(io.BytesIO(d), PHONE_SIZE) for d in photos[:phone_count]]
    by_kind["phone"] = [_single("phone", f"phone-{i:02d}.jpg", d) for i, d in enumerate(phones)]
    batches = []
    for start in range(0, len(photos) - batch_size + 1, batch_size):
        files = list(zip(names, photos, strict=True))[start : start + batch_size]
        batches.append(
            Payload(
                "batch4",
                f"batch-{start // batch_size:02d}",
                BATCH,
                multipart_files("files", files),
                files=len(files),
                file_bytes=sum(len(d) for _, d in files),
            )
        )
    by_kind["batch4"] = batches
    by_kind["expensive"] = [_single("expensive", n, d) for n, d in corpus.expensive_files().items()]
    by_kind["hostile"] = [_single("hostile", n, d) for n, d in corpus.hostile_files().items()]
    empty = [kind for kind, items in by_kind.items() if not items]
    if empty:
        raise CorpusMissing(f"no payloads of kind {empty}: the corpus returned nothing for them")
    return by_kind
