"""The HTML report: content from real (tiny) runs of both tasks, escaping, errors, and a real headless browser."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dlcv.report.html import Column, table
from tests.conftest import run_cli

SEGMENT = {"model_kwargs": {"fc_channels": 32}, "workers": 0, "device": "cpu", "image_size": 32, "epochs": 3}
SEGMENT |= {"batch_size": 4, "lr": 1e-3, "snapshot_ids": ["0000", "0002"]}
CLASSIFY = {"model_kwargs": {"input_size": 16}, "workers": 0, "device": "cpu", "epochs": 2, "batch_size": 8}
CLASSIFY |= {"lr": 0.01}


def _train(tmp: Path, group: str, data: Path, model: str, name: str, options: dict) -> Path:
    from dlcv.cli import main  # module-scoped fixtures cannot take capsys

    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump(options))
    run = tmp / name
    argv = [group, "train", "--data", data, "--model", model, "--out", run, "--config", config]
    assert main([str(a) for a in argv]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, landcover_dir, classification_dir) -> list[Path]:
    """FCN-8s and FCN-32s on generated land cover (one named to need escaping), ResNet-18 on generated classes."""
    tmp = tmp_path_factory.mktemp("report_runs")
    return [
        _train(tmp, "segment", landcover_dir, "fcn8s", "fcn8s", SEGMENT),
        _train(tmp, "segment", landcover_dir, "fcn32s", "fcn32s <b>&", SEGMENT),
        _train(tmp, "classify", classification_dir, "resnet18", "resnet18", CLASSIFY),
    ]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    from dlcv.cli import main

    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", *map(str, runs), "--out", str(out), "--ids", "0000", "0001", "0002"]) == 0
    return out


def _embedded_pngs(page: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")) for data in found]


def test_report_holds_every_part(report, runs):
    page = report.read_text(encoding="utf-8")
    for heading in ("Runs compared", "Configuration", "Architectures", "Training curves", "Segmentation"):
        assert f"<h2>{heading}</h2>" in page
    for heading in ("Classification", "Per-class IoU", "Confusion matrix", "t-SNE", "masks during training"):
        assert heading in page, heading
    # Class names head the IoU table; per-class accuracy lists every generated class.
    assert all(f"<th>{name}</th>" in page for name in ("urban", "agriculture", "barren", "mIoU"))
    # Curves (2 tasks), masks (1 comparison + 2 progress), confusion, t-SNE: every figure is embedded and not blank.
    pictures = _embedded_pngs(page)
    assert len(pictures) >= 7
    assert all(p.std() > 5 for p in pictures)
    # The architecture as PyTorch prints it, and each run's resolved options.
    assert "total parameters:" in page and "Conv2d(3, 64" in page
    assert "fc_channels: 32" in page
    # How each run was made, from its run.json: training time and device in the runs table.
    compared = page.split("<h2>Runs compared</h2>")[1].split("<h2>")[0]
    for run in runs:
        record = json.loads((run / "run.json").read_text())
        assert f">{record['wall_s'] / 60:.1f} min</td>" in compared and record["device"] == "cpu"
    assert compared.count('<td class="text">cpu</td>') == len(runs)


def test_report_marks_the_best_and_escapes_names(report):
    page = report.read_text(encoding="utf-8")
    assert 'class="best"' in page
    assert "fcn32s &lt;b&gt;&amp;" in page and "<b>&" not in page


def test_report_fetches_nothing(report):
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "url(" not in page and "@import" not in page and "<script" not in page
    assert "http://" not in page and "https://" not in page


def test_best_is_marked_per_column():
    columns = [Column("run"), Column("loss", best="min"), Column("score", best="max"), Column("other")]
    columns.append(Column("flat", best="max"))
    rows = [["a", 0.5, 0.7, 1.0, 0.0], ["b", 0.2, 0.9, 2.0, 0.0], ["c", 0.2, float("nan"), 3.0, 0.0]]
    cells = re.findall(r"<td([^>]*)>([^<]*)</td>", table(columns, rows))
    best = [text for attributes, text in cells if "best" in attributes]
    # Ties are all marked; NaN never; nor a column without a best, nor one where every value is equal.
    assert best == ["0.2", "0.9", "0.2"]


@pytest.mark.parametrize(
    ("make", "culprit"),
    [
        (lambda tmp: tmp / "nowhere", "nowhere"),
        (lambda tmp: tmp, "config.yaml"),
    ],
)
def test_report_user_errors(make, culprit, tmp_path, capsys):
    out = tmp_path / "report.html"
    status, _, err = run_cli(capsys, "report", make(tmp_path), "--out", out)
    assert status == 2 and err.startswith("error: ") and culprit in err and err.count("\n") == 1
    assert not out.exists()


def test_a_report_out_that_is_a_folder_is_refused_before_any_building(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dlcv.report.build.build_report", lambda *args: pytest.fail("built before the check"))
    status, _, err = run_cli(capsys, "report", runs[0], "--out", tmp_path)
    assert status == 2 and err == f"error: {tmp_path}: a folder, where a file is to be written\n"


def test_report_of_a_run_without_its_data_says_so(runs, tmp_path, capsys):
    moved = tmp_path / "fcn8s"
    shutil.copytree(runs[0], moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    (moved / "config.yaml").write_text(yaml.safe_dump({**config, "data": str(tmp_path / "gone")}))
    out = tmp_path / "report.html"
    status, _, err = run_cli(capsys, "report", moved, "--out", out)
    assert status == 0, err
    assert "not found here" in out.read_text(encoding="utf-8")


# ---- a real browser -------------------------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class DevTools:
    """Chromium driven over ``--remote-debugging-pipe``: JSON messages ending in NUL on file descriptors 3 and 4."""

    def __init__(self, executable: str, width: int, height: int) -> None:
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="dlcv-chromium-")

        def descriptors() -> None:  # in the child: the pipe ends become fds 3 (commands) and 4 (replies)
            commands, replies = os.dup(to_browser), os.dup(from_browser)
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        argv = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
        argv += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        argv += [f"--user-data-dir={self.profile}", "--remote-debugging-pipe", f"--window-size={width},{height}"]
        self.process = subprocess.Popen(
            [*argv, "about:blank"],
            preexec_fn=descriptors,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._writer = os.fdopen(self._to_browser, "wb")
        self._reader = os.fdopen(self._from_browser, "rb")
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = self._reader.read1(1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._writer.write(json.dumps(message).encode() + b"\0")
        self._writer.flush()
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._read())

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=20)
        except Exception:
            self.process.kill()
            self.process.wait(timeout=20)
        shutil.rmtree(self.profile, ignore_errors=True)


def test_report_in_a_headless_browser(report, tmp_path):
    """Loaded in Chromium: no console errors, nothing fetched beyond the file and its data URIs, not blank."""
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium)")
    browser = DevTools(executable, 1280, 2000)
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session)
        browser.send(
            "Emulation.setDeviceMetricsOverride", session, width=1280, height=2000, deviceScaleFactor=1, mobile=False
        )
        browser.send("Page.navigate", session, url=report.as_uri())
        browser.wait_for("Page.loadEventFired")
        screenshot = base64.b64decode(browser.send("Page.captureScreenshot", session, format="png")["data"])
        pdf = base64.b64decode(browser.send("Page.printToPDF", session, printBackground=True)["data"])
    finally:
        browser.close()
    events = browser.events
    errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"]
    errors += [e for e in events if e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error"]
    errors += [e for e in events if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    assert not errors, errors[:3]
    requested = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.split(":", 1)[0] in ("file", "data") for url in requested), requested[:5]
    shot = tmp_path / "report.png"
    shot.write_bytes(screenshot)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280) and pixels.std() > 20  # text, tables and figures, not a blank page
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 2  # it prints, on pages


def test_report_file_has_an_ordinary_mode(report):
    """Written atomically, yet readable as any new file is (not the 0600 of a temporary file)."""
    umask = os.umask(0)
    os.umask(umask)
    assert report.stat().st_mode & 0o777 == 0o666 & ~umask


def test_runs_whose_folders_share_a_name_are_told_apart_by_their_parent(runs, tmp_path):
    from dlcv.errors import UserError
    from dlcv.report.runs import read_runs

    copies = [tmp_path / parent / "resnet18" for parent in ("first", "second")]
    for copy in copies:
        shutil.copytree(runs[2], copy)
    assert [run.name for run in read_runs([*copies, runs[0]])] == ["first/resnet18", "second/resnet18", "fcn8s"]
    with pytest.raises(UserError, match="given twice"):
        read_runs([copies[0], copies[0].parent / "." / "resnet18"])
