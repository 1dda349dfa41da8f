"""The launcher's supervisor: when it restarts a process, and when it leaves it alone."""

from __future__ import annotations

from types import SimpleNamespace

from services.mesh.launcher import Supervisor


class FakeProcess:
    def __init__(self) -> None:
        self.proc = SimpleNamespace(returncode=None, pid=1)
        self.alive, self.stopped, self.starts, self.fail_starts = True, False, 0, 0

    def crash(self, code: int = 1) -> None:
        self.alive, self.proc.returncode = False, code

    def start(self) -> None:
        self.starts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("exited at once")
        self.alive, self.proc = True, SimpleNamespace(returncode=None, pid=1 + self.starts)


def supervisor(proc: FakeProcess, tmp_path) -> Supervisor:
    return Supervisor({"tms": proc}, tmp_path / "supervisor.json", backoff=1, backoff_max=8, stable_after=60)


def test_a_crashed_process_is_restarted_after_its_back_off_and_counted(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr("services.mesh.launcher.time.monotonic", lambda: now[0])
    proc = FakeProcess()
    sup = supervisor(proc, tmp_path)
    assert not sup.check("tms", proc)
    proc.crash(-9)
    assert sup.check("tms", proc) and sup.known["tms"].state == "restarting"
    assert sup.known["tms"].last_exit == -9
    now[0] += 0.5
    assert not sup.check("tms", proc) and proc.starts == 0  # still in its back-off (1 s)
    now[0] += 0.6
    assert sup.check("tms", proc) and proc.starts == 1 and proc.alive
    assert sup.known["tms"].restarts == 1 and sup.known["tms"].state == "running"


def test_the_back_off_doubles_while_a_process_keeps_crashing_and_starts_over_once_it_is_stable(
        tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr("services.mesh.launcher.time.monotonic", lambda: now[0])
    proc = FakeProcess()
    sup = supervisor(proc, tmp_path)
    waits = []
    for _ in range(5):
        proc.crash()
        sup.check("tms", proc)
        waits.append(sup.known["tms"].due - now[0])
        now[0] = sup.known["tms"].due
        sup.check("tms", proc)
        now[0] += 1
    assert waits == [1, 2, 4, 8, 8]
    now[0] += 61  # up and stable for a minute: the next crash waits 1 s again
    sup.check("tms", proc)
    proc.crash()
    sup.check("tms", proc)
    assert sup.known["tms"].due - now[0] == 1


def test_a_process_stopped_on_purpose_is_not_restarted(tmp_path, monkeypatch):
    proc = FakeProcess()
    sup = supervisor(proc, tmp_path)
    proc.stopped, proc.alive = True, False
    assert not sup.check("tms", proc) and proc.starts == 0


def test_a_restart_that_fails_is_tried_again_later(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr("services.mesh.launcher.time.monotonic", lambda: now[0])
    proc = FakeProcess()
    sup = supervisor(proc, tmp_path)
    proc.crash()
    sup.check("tms", proc)
    proc.fail_starts = 1
    now[0] = sup.known["tms"].due
    assert not sup.check("tms", proc) and proc.starts == 1 and not proc.alive
    now[0] = sup.known["tms"].due
    assert sup.check("tms", proc) and proc.alive and sup.known["tms"].restarts == 1
