"""The download path over real loopback HTTP: verified, atomic, and resolved in the documented order."""

import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from dualrec.config import paths
from dualrec.data.download import download_movielens, resolve_data_dir
from dualrec.errors import DataError


def zipped(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name in ("ratings.dat", "movies.dat", "users.dat"):
            bundle.write(folder / name, f"ml-1m/{name}")
    return buffer.getvalue()


@pytest.fixture()
def server(ml_dir):
    """Serves /ml-1m.zip (the fixture folder) and /broken.zip on 127.0.0.1."""
    payloads = {"/ml-1m.zip": zipped(ml_dir), "/broken.zip": b"PK not really a zip"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = payloads.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", payloads
    httpd.shutdown()


@pytest.fixture()
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DUALREC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_download_is_verified_and_unpacked(server, fresh_home):
    base, payloads = server
    md5 = hashlib.md5(payloads["/ml-1m.zip"]).hexdigest()
    folder = download_movielens(f"{base}/ml-1m.zip", md5)
    assert folder == paths().downloads / "ml-1m"
    assert sorted(p.name for p in folder.iterdir()) == ["movies.dat", "ratings.dat", "users.dat"]
    assert download_movielens(f"{base}/missing.zip", md5) == folder  # second call finds it, no network needed


def test_corrupt_download_leaves_nothing(server, fresh_home):
    base, payloads = server
    with pytest.raises(DataError, match="corrupt.*nothing was kept"):
        download_movielens(f"{base}/ml-1m.zip", "0" * 32)
    assert list(paths().downloads.iterdir()) == []


def test_bad_zip_with_right_checksum_is_reported(server, fresh_home):
    base, payloads = server
    with pytest.raises(DataError, match="not a valid zip"):
        download_movielens(f"{base}/broken.zip", hashlib.md5(payloads["/broken.zip"]).hexdigest())
    assert not (paths().downloads / "ml-1m").exists()


def test_unreachable_server_is_a_clear_error(server, fresh_home):
    base, _ = server
    with pytest.raises(DataError, match="Could not download .*--data-dir"):
        download_movielens(f"{base}/missing.zip", "0" * 32)
    assert list(paths().downloads.iterdir()) == []


def test_data_dir_order_is_argument_then_environment(ml_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DUALREC_DATA_DIR", str(ml_dir))
    assert resolve_data_dir() == ml_dir
    with pytest.raises(DataError, match="not found in"):
        resolve_data_dir(tmp_path)
