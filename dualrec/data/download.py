"""Finding the MovieLens folder: --data-dir, else DUALREC_DATA_DIR, else a checksum-verified download from GroupLens.

The download is atomic: the zip is written to a temporary file, its md5 checked, and only then moved into place and
unpacked into a temporary folder that is renamed when complete. A failed or corrupt download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from dualrec.config import ENV_DATA_DIR, ML1M_FILES, ML1M_FOLDER, ML1M_MD5, ML1M_URL, paths
from dualrec.data.movielens import require_files
from dualrec.errors import DataError

log = logging.getLogger(__name__)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_zip(url: str, target: Path, expected_md5: str) -> Path:
    """Download url to target with a progress bar; the file appears only if its md5 is the expected one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {target.name}") as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        actual = md5_of(Path(partial))
        if actual != expected_md5:
            raise DataError(
                f"The download of {url} is corrupt (md5 {actual}, expected {expected_md5}); nothing was kept. Try again."
            )
        os.replace(partial, target)
        return target
    except OSError as error:
        raise DataError(f"Could not download {url}: {error}. Download it by hand and pass its folder with --data-dir.") from None
    finally:
        Path(partial).unlink(missing_ok=True)


def unpack_movielens(archive: Path, destination: Path) -> Path:
    """Unzip ml-1m.zip so that destination holds the three .dat files; all or nothing."""
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=destination.name + ".unpacking"))
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(staging)
        inner = staging / ML1M_FOLDER if (staging / ML1M_FOLDER).is_dir() else staging
        require_files(inner)
        os.replace(inner, destination)
        return destination
    except zipfile.BadZipFile:
        raise DataError(f"{archive} is not a valid zip file; delete it and download again.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_movielens(url: str = ML1M_URL, expected_md5: str = ML1M_MD5) -> Path:
    """The user-level MovieLens folder, downloaded and unpacked on first use."""
    destination = paths().downloads / ML1M_FOLDER
    if all((destination / name).is_file() for name in ML1M_FILES):
        return destination
    archive = paths().downloads / "ml-1m.zip"
    if not archive.is_file() or md5_of(archive) != expected_md5:
        log.info("MovieLens 1M not found locally; downloading %s", url)
        fetch_zip(url, archive, expected_md5)
    return unpack_movielens(archive, destination)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder to read: the explicit argument, else $DUALREC_DATA_DIR, else the downloaded copy."""
    chosen = data_dir or os.environ.get(ENV_DATA_DIR)
    if chosen:
        folder = Path(chosen).expanduser()
        require_files(folder)
        return folder
    return download_movielens()
