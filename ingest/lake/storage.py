"""Byte-level access to lake zones, the same way on a local directory and on S3."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyarrow import fs as pafs

from ingest.settings import Settings


def s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    s3 = settings.s3
    if s3 is None:
        raise ValueError("an s3:// lake needs S3 settings")
    kwargs: dict[str, Any] = {"region": s3.region}
    if s3.endpoint:
        parsed = urlparse(s3.endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if s3.access_key_id:
        kwargs["access_key"] = s3.access_key_id
        kwargs["secret_key"] = s3.secret_access_key
        kwargs["session_token"] = s3.session_token
    # Bounded retries so an endpoint that went away fails the run instead of hanging it.
    kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=4)
    kwargs["connect_timeout"] = 5
    kwargs["request_timeout"] = 30
    return pafs.S3FileSystem(**kwargs)


class LakeStorage:
    """Read and write objects by path relative to the lake root."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.lake_url
        if settings.lake_is_s3:
            self.fs: pafs.FileSystem = s3_filesystem(settings)
            self._root = self.url[len("s3://") :]
        else:
            self.fs = pafs.LocalFileSystem()
            self._root = self.url
            Path(self._root).mkdir(parents=True, exist_ok=True)

    def uri(self, relpath: str) -> str:
        """Full location of ``relpath`` as other tools (pyiceberg, DuckDB) understand it."""
        return f"{self.url}/{relpath}"

    def _path(self, relpath: str) -> str:
        return f"{self._root}/{relpath}"

    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write an object atomically: readers see the whole object or none of it."""
        path = self._path(relpath)
        if self.settings.lake_is_s3:
            # A single PUT is atomic on S3.
            with self.fs.open_output_stream(path) as out:
                out.write(data)
        else:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return self.uri(relpath)

    def write_json(self, relpath: str, obj: Any) -> str:
        return self.write_bytes(relpath, json.dumps(obj, ensure_ascii=False, indent=2, default=str).encode())

    def read_bytes(self, relpath: str) -> bytes:
        with self.fs.open_input_stream(self._path(relpath)) as fh:
            return fh.read()

    def delete(self, relpath: str) -> None:
        self.fs.delete_file(self._path(relpath))

    def relpath_of(self, uri: str) -> str:
        """The lake-relative path of a full location (as pyiceberg reports data files)."""
        for prefix in (f"file://{self.url}/", f"{self.url}/"):
            if uri.startswith(prefix):
                return uri[len(prefix) :]
        raise ValueError(f"{uri} is not inside the lake {self.url}")

    def exists(self, relpath: str) -> bool:
        return self.fs.get_file_info(self._path(relpath)).type != pafs.FileType.NotFound

    def list(self, prefix: str) -> list[str]:
        """Relative paths of all objects under ``prefix`` (recursive, sorted)."""
        selector = pafs.FileSelector(self._path(prefix), recursive=True, allow_not_found=True)
        root = self._root + "/"
        return sorted(
            info.path[len(root) :]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )
