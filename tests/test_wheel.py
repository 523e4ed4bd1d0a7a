"""The built wheel is the product: installed into a fresh virtualenv, it migrates a database
and serves the dashboard, its static files and the offline API docs. An editable install
reads files from the source tree and hides a package or a data file that the wheel leaves
out; this test does not."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _source_copy(dest: Path) -> Path:
    """The files git knows (tracked and new, not ignored): a build in place would leave
    build/ and *.egg-info in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


def test_the_wheel_in_a_fresh_virtualenv_serves_the_dashboard_and_its_files(
    tmp_path: Path,
) -> None:
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("biblioedge-*.whl")
    assert "SetuptoolsDeprecationWarning" not in build.stderr, build.stderr[-2000:]

    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    install = subprocess.run(
        [*pip, "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    # the dependencies come from the suite's environment (no network here); biblioedge
    # itself only from the wheel: a path line in a .pth file runs none of that
    # environment's own .pth files, so its editable install stays out
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "suite_dependencies.pth").write_text(sysconfig.get_paths()["purelib"])

    # every static file a page links to (the pages themselves need a signed-in user)
    static = sorted(
        {
            url
            for page in (ROOT / "fleet" / "templates").glob("*.html")
            for url in re.findall(
                r'(?:src|href)="(/dashboard/[^"]*static/[^"]+)"', page.read_text()
            )
        }
    )
    assert len(static) >= 4, static
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        import biblioedge
        from fastapi.testclient import TestClient

        from biblioedge.fleet.api import create_app
        from biblioedge.fleet.config import CentralConfig
        from biblioedge.fleet.metrics import CentralMetrics
        from biblioedge.fleet.repo import Repo

        assert biblioedge.__file__.startswith({str(fresh)!r}), biblioedge.__file__
        cfg = CentralConfig(data_dir=Path({str(tmp_path / "central")!r}))
        cfg.data_dir.mkdir()
        repo = Repo(cfg.db_url)
        repo.migrate()  # the migrations and their template are in the wheel
        client = TestClient(create_app(cfg, repo, None, CentralMetrics()))
        page = client.get("/dashboard", follow_redirects=True)
        assert page.status_code == 200 and "<form" in page.text, page.status_code
        for url in {static!r}:
            r = client.get(url)
            assert r.status_code == 200 and r.content, url
        docs = client.get("/docs")
        assert docs.status_code == 200
        import re
        for url in re.findall(r'(?:src|href)="(/[^"]+)"', docs.text):
            assert client.get(url).status_code == 200, url
        repo.close()
        print("served from", biblioedge.__file__)
        """
    )
    run = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert str(fresh) in run.stdout
    cli = subprocess.run(
        [str(fresh / "bin" / "biblioedge"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0 and "central" in cli.stdout, cli.stderr
