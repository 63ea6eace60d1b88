"""The tray's control panel without a display: daemon.control's actions and texts on the real server, and the
server's pause and activity they rely on."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from gimp_inpaint.client.connection import InpaintClient
from gimp_inpaint.client.fill import FillError, run_fill
from gimp_inpaint.daemon.config import Settings
from gimp_inpaint.daemon.control import (
    NOTIFY_AFTER_SECONDS,
    Controller,
    ModelEntry,
    job_end_notice,
    open_path,
    opener_command,
    status_text,
)
from gimp_inpaint.daemon.engines.base import EngineLoadError, LoadProgress, ModelState
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.server import PAUSED_MESSAGE, Activity, DaemonServer, JobEnd, RunningJob
from gimp_inpaint.protocol import Accepted, Error, ErrorCode, Rect, Result
from running_daemon import WAIT, StepEngine, serving
from test_daemon_server import (  # noqa: F401 - crop is a fixture
    TOKEN,
    GateEngine,
    connected,
    crop,
    daemon,
    make_request,
)
from test_fill import FakeDocument, records
from websockets.exceptions import ConnectionClosed

Crop = tuple[np.ndarray, np.ndarray]


class WarmableEngine(StepEngine):
    """A model that loads (reporting a download) and unloads; records on which thread each happened."""

    def __init__(self, name: str = "model", fail: str = "") -> None:
        super().__init__(name)
        self.loaded = False
        self.fail = fail
        self.threads: list[tuple[str, str]] = []

    def model_state(self) -> ModelState:
        return ModelState.LOADED if self.loaded else ModelState.ON_DISK

    def load(self, progress: LoadProgress | None = None) -> None:
        self.threads.append(("load", threading.current_thread().name))
        if progress is not None:
            for done in (0, 50, 100):
                progress("download", done, 100)
        if self.fail:
            raise EngineLoadError(self.fail)
        self.loaded = True

    def unload(self) -> None:
        self.threads.append(("unload", threading.current_thread().name))
        self.loaded = False


# -- the server's side ---------------------------------------------------------------------------------------------

def test_a_paused_daemon_refuses_new_jobs_with_a_clear_code_and_runs_the_accepted_ones(tmp_path: Path,
                                                                                        crop: Crop) -> None:  # noqa: F811
    engine = GateEngine()
    with daemon([engine, OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        client.send(make_request(crop, "running", engine="gate"))
        assert client.recv() == Accepted("running", 0)
        assert engine.started.wait(WAIT)
        client.send(make_request(crop, "queued", engine="gate"))
        assert client.next_for("queued") == Accepted("queued", 1)
        server.set_paused(True)
        refused = client.run(make_request(crop, "new"))[1]
        assert isinstance(refused, Error) and refused.code is ErrorCode.PAUSED and refused.job_id == "new"
        assert refused.message == PAUSED_MESSAGE and "Pause in its tray menu" in refused.message
        engine.release.set()
        assert isinstance(client.collect("running")[1], Result)  # accepted before the pause: they still run
        assert isinstance(client.collect("queued")[1], Result)
        server.set_paused(False)
        assert isinstance(client.run(make_request(crop, "after"))[1], Result)


def test_the_client_tells_the_user_to_resume_from_the_tray(tmp_path: Path) -> None:
    document = FakeDocument(selection=Rect(10, 10, 20, 20))
    with daemon([OpenCVEngine()], tmp_path) as server:
        server.set_paused(True)
        with pytest.raises(FillError) as caught:
            run_fill(document, lambda: InpaintClient.connect(server.url, TOKEN, "pytest"), *records(engine="opencv"))
    assert caught.value.code is ErrorCode.PAUSED and document.add_calls == 0
    assert caught.value.message == (f"The inpainting daemon reported an error: {PAUSED_MESSAGE}. Choose Resume in the "
                                    "menu of the daemon's icon in the system tray, then try again.")


def test_activity_follows_the_running_job_the_queue_and_the_end(tmp_path: Path, crop: Crop) -> None:  # noqa: F811
    engine = GateEngine()
    seen: list[Activity] = []
    settings = Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log", port=0)
    server = DaemonServer(settings, [engine], TOKEN, on_activity=seen.append)
    with serving(server), connected(server.url) as client:
        client.send(make_request(crop, "first", engine="gate"))
        assert client.recv() == Accepted("first", 0)
        assert engine.started.wait(WAIT)
        client.send(make_request(crop, "second", engine="gate"))
        assert client.next_for("second") == Accepted("second", 1)
        assert server.activity == Activity(RunningJob("gate", "first"), waiting=1)
        server.set_paused(True)
        engine.release.set()
        assert isinstance(client.collect("first")[1], Result)
        assert isinstance(client.collect("second")[1], Result)
    ends = [activity.ended for activity in seen if activity.ended is not None]
    assert [end.job for end in ends] == [RunningJob("gate", "first"), RunningJob("gate", "second")]
    assert all(end.error is None and end.seconds > 0 for end in ends)
    assert seen[-1] == Activity(None, 0, paused=True, ended=ends[-1])
    assert Activity(RunningJob("gate", "second"), 0, paused=True) in seen


# -- texts -----------------------------------------------------------------------------------------------------------

def test_status_text_names_the_running_job_the_queue_the_pause_and_a_task() -> None:
    assert status_text(Activity()) == "Idle"
    running = RunningJob("sd15-inpaint", "0123456789abcdef0123456789abcdef")
    assert status_text(Activity(running, waiting=2)) == "Running sd15-inpaint, job '01234567'…; 2 waiting"
    assert status_text(Activity(RunningJob("opencv", "j1"), paused=True), "loading sdxl: downloading, 40 %") == \
        "Running opencv, job 'j1'; paused: new jobs are refused; loading sdxl: downloading, 40 %"
    assert status_text(Activity(None, waiting=1)) == "Idle; 1 waiting"


def test_only_long_jobs_that_were_not_cancelled_are_announced() -> None:
    job = RunningJob("sd15-inpaint", "j1")
    assert job_end_notice(JobEnd(job, NOTIFY_AFTER_SECONDS - 0.5)) is None
    assert job_end_notice(JobEnd(job, 42.4)) == ("Generative fill done",
                                                 "sd15-inpaint, job 'j1', 42 s: the result is in GIMP")
    failed = job_end_notice(JobEnd(job, 30, Error(ErrorCode.OUT_OF_MEMORY, "CUDA out of memory", "j1")))
    assert failed == ("Generative fill failed", "sd15-inpaint, job 'j1', 30 s: CUDA out of memory")
    assert job_end_notice(JobEnd(job, 99, Error(ErrorCode.CANCELLED, "cancelled", "j1"))) is None


def test_model_entries_offer_what_their_state_allows() -> None:
    assert [(state.value, ModelEntry("m", state).can_load, ModelEntry("m", state).can_unload)
            for state in ModelState] == [("built in", False, False), ("unavailable", False, False),
                                         ("not downloaded", True, False), ("on disk", True, False),
                                         ("loaded", False, True)]
    assert ModelEntry("sd15-inpaint", ModelState.ON_DISK).label == "sd15-inpaint — on disk"
    elsewhere = [ModelEntry("m", state, here=False) for state in ModelState]  # the Ray backend's replicas load them
    assert not any(entry.can_load or entry.can_unload for entry in elsewhere)
    assert [entry.label for entry in elsewhere[:2]] == ["m — built in", "m — loads on the Ray replicas"]


# -- the file opener ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("platform", "program"), [("linux", "xdg-open"), ("freebsd14", "xdg-open"),
                                                   ("darwin", "open")])
def test_open_path_runs_the_platforms_opener(tmp_path: Path, platform: str, program: str) -> None:
    ran: list[list[str]] = []
    open_path(tmp_path, ran.append, platform)
    assert ran == [[program, str(tmp_path)]]
    assert opener_command(tmp_path, "win32") is None
    with pytest.raises(FileNotFoundError):
        open_path(tmp_path / "missing.log", ran.append, platform)
    assert len(ran) == 1


def test_open_path_uses_startfile_on_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Path] = []
    monkeypatch.setattr("gimp_inpaint.daemon.control.os.startfile", started.append, raising=False)
    open_path(tmp_path, lambda command: pytest.fail("no command on Windows"), "win32")
    assert started == [tmp_path]


# -- the controller's actions on the real server ---------------------------------------------------------------------

def controller_for(server: DaemonServer, opened: list[Path], notices: list[tuple[str, str]],
                   changes: list[str] | None = None) -> Controller:
    """A controller whose opener records (and fails for a path named ``broken``), whose notices are recorded, and
    whose ``on_change`` records :attr:`Controller.task` each time."""
    def record(path: Path) -> None:
        if path.name == "broken":
            raise OSError("no opener")
        opened.append(path)

    def changed() -> None:
        if changes is not None:
            changes.append(control.task)

    control = Controller(server, opener=record, notify=lambda title, message: notices.append((title, message)),
                         on_change=changed)
    return control


def test_load_and_unload_run_on_the_worker_after_the_running_job(tmp_path: Path, crop: Crop) -> None:  # noqa: F811
    gate, model = GateEngine(), WarmableEngine()
    with daemon([gate, model, OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        changes: list[str] = []
        control = controller_for(server, [], [], changes)
        assert control.models() == [ModelEntry("gate", ModelState.BUILT_IN), ModelEntry("model", ModelState.ON_DISK),
                                    ModelEntry("opencv", ModelState.BUILT_IN)]
        client.send(make_request(crop, "running", engine="gate"))
        assert client.recv() == Accepted("running", 0)
        assert gate.started.wait(WAIT)
        loading = control.load("model")
        assert not loading.done() and model.threads == []  # it waits for the job: never beside it
        gate.release.set()
        loading.result(WAIT)
        assert isinstance(client.collect("running")[1], Result)
        assert control.model("model").state is ModelState.LOADED
        control.unload("model").result(WAIT)
        assert control.model("model").state is ModelState.ON_DISK
    assert [(what, thread.startswith("gimp-inpaint-worker")) for what, thread in model.threads] == \
        [("load", True), ("unload", True)]
    assert changes == ["loading model", "loading model: downloading, 0 %", "loading model: downloading, 50 %",
                       "loading model: downloading, 100 %", "", "unloading model", ""]
    assert control.task == ""


def test_a_failed_load_is_notified_and_is_the_futures_error(tmp_path: Path) -> None:
    model = WarmableEngine(fail="the model folder /nowhere does not exist")
    notices: list[tuple[str, str]] = []
    with daemon([model], tmp_path) as server:
        control = controller_for(server, [], notices)
        with pytest.raises(EngineLoadError, match="/nowhere does not exist"):
            control.load("model").result(WAIT)
    assert notices == [("model: loading model failed", "the model folder /nowhere does not exist")]
    with pytest.raises(KeyError):
        control.load("no-such-engine")


def test_pause_resume_and_quit_from_the_controller(tmp_path: Path, crop: Crop) -> None:  # noqa: F811
    with daemon([OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        control = controller_for(server, [], [])
        control.toggle_pause()
        assert control.paused and control.status() == "Idle; paused: new jobs are refused"
        refused = client.run(make_request(crop, "j1"))[1]
        assert isinstance(refused, Error) and refused.code is ErrorCode.PAUSED
        control.resume()
        assert isinstance(client.run(make_request(crop, "j2"))[1], Result)
        control.pause()
        control.toggle_pause()
        assert not control.paused and control.status() == "Idle"
        control.quit()
        with pytest.raises(ConnectionClosed):  # the daemon closes the connection as it stops
            client.recv()


def test_open_log_and_config_folder_and_a_failing_opener(tmp_path: Path) -> None:
    opened: list[Path] = []
    notices: list[tuple[str, str]] = []
    with daemon([OpenCVEngine()], tmp_path) as server:
        control = controller_for(server, opened, notices)
        control.open_log()
        control.open_config_folder()
        assert opened == [tmp_path / "daemon.log", tmp_path]
        server.settings = Settings(config_dir=tmp_path / "broken", log_file=tmp_path / "daemon.log")
        control.open_config_folder()
    assert notices == [("Cannot open the config folder", "no opener")]
