"""The promotion report: what `doit` prints, in plain mode (CI), under a terminal, and run after run."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from doit.exceptions import TaskError, TaskFailed, UnmetDependency

from pipeline.wiring.report import (
    PROGRESS_THRESHOLD,
    PromotionReporter,
    Tally,
    one_line,
    split_node_task,
    wants_plain_output,
)
from tests.conftest import EXAMPLE_FILES, PROJECT, Repo, _clean_env

ESC = "\x1b["
HIDE_CURSOR = "\x1b[?25l"  # rich's live display hides the cursor while the bar is drawn


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def edit(repo: Repo, path: str, old: str, new: str) -> None:
    target = repo.path / path
    text = target.read_text()
    assert old in text, f"{old!r} not in {path}"
    target.write_text(text.replace(old, new))


# --- pure parts --------------------------------------------------------------------------------


def test_summary_counts_and_names() -> None:
    tally = Tally(nodes=[f"n{i}" for i in range(1, 201)], encrypting=True)
    tally.promoted = ["n7", "n1"]
    tally.up_to_date = {f"n{i}" for i in range(1, 201)} - {"n1", "n7"}
    tally.sops_runs = 2
    assert tally.summary(0.314) == "promoted 2 of 200 nodes (n1, n7) · 198 up to date · 2 sops runs · 0.31 s"


def test_summary_partitions_every_node() -> None:
    tally = Tally(nodes=["a", "b", "c", "d", "e"], encrypting=True)
    tally.promoted, tally.unchanged, tally.failed, tally.up_to_date = ["a"], ["b"], ["c"], {"d"}
    tally.sops_runs = 1
    assert tally.summary(1) == ("promoted 1 of 5 nodes (a) · 1 unchanged (b) · 1 up to date · 1 failed (c)"
                                " · 1 not reached · 1 sops run · 1.00 s")


def test_summary_lists_a_few_names_then_counts() -> None:
    names = [f"w{i}" for i in range(20)]
    tally = Tally(nodes=names, encrypting=True, promoted=list(names))
    assert "(w0, w1, w2, w3, w4, w5, w6, w7, +12 more)" in tally.summary(0)


def test_summary_without_nodes_names_the_tasks() -> None:
    assert Tally(tasks_ran=["graph"]).summary(0.2) == "ran graph · 0.20 s"
    assert Tally(tasks_failed=["check"]).summary(0) == "check failed · 0.00 s"


def test_plain_output_in_ci_without_a_terminal_or_on_a_dumb_one() -> None:
    assert wants_plain_output(io.StringIO(), {})
    assert wants_plain_output(Terminal(), {"CI": "true"})
    assert wants_plain_output(Terminal(), {"TERM": "dumb"})
    assert not wants_plain_output(Terminal(), {"TERM": "xterm"})
    assert not wants_plain_output(Terminal(), {"CI": "false", "TERM": "xterm"})


def test_helpers() -> None:
    assert split_node_task("encrypt:cp1") == ("encrypt", "cp1")
    assert split_node_task("render:w-1") == ("render", "w-1")
    assert split_node_task("check") is None
    assert split_node_task("stage:x") is None
    assert one_line("a\n  b\n\n") == "a b"


def fake_task(name: str, values: dict[str, object] | None = None, deps: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(name=name, values=values or {}, actions=[object()], task_dep=deps or [], setup_tasks=[])


def graph_of(count: int) -> dict[str, SimpleNamespace]:
    nodes = [f"n{i}" for i in range(count)]
    tasks = {f"render:{n}": fake_task(f"render:{n}") for n in nodes}
    tasks.update({f"encrypt:{n}": fake_task(f"encrypt:{n}", deps=[f"render:{n}"]) for n in nodes})
    tasks["promote"] = fake_task("promote", deps=[f"encrypt:{n}" for n in nodes])
    return tasks


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def drive(reporter: PromotionReporter, tasks: dict[str, SimpleNamespace]) -> None:
    reporter.initialize(tasks, ["promote"])
    for name, task in tasks.items():
        if name.startswith("render:"):
            reporter.execute_task(task)
            reporter.add_success(task)
    for name, task in tasks.items():
        if name.startswith("encrypt:"):
            reporter.execute_task(task)
            task.values = {"rewritten": True, "trigger": "new", "sops_runs": 1}
            reporter.add_success(task)
    reporter.complete_run()


def test_plain_mode_never_draws_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    out = Terminal()
    drive(PromotionReporter(out, {}), graph_of(PROGRESS_THRESHOLD + 10))
    assert ESC not in out.getvalue()
    assert lines(out.getvalue())[-1].startswith("promoted 15 of 15 nodes")


def test_terminal_draws_a_bar_only_past_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    few, many = Terminal(), Terminal()
    drive(PromotionReporter(few, {}), graph_of(PROGRESS_THRESHOLD))
    drive(PromotionReporter(many, {}), graph_of(PROGRESS_THRESHOLD + 1))
    assert HIDE_CURSOR not in few.getvalue()
    assert HIDE_CURSOR in many.getvalue() and many.getvalue().rstrip().endswith("\x1b[0m")
    assert "promoted 6 of 6 nodes" in many.getvalue()


def test_bug_keeps_its_traceback_and_a_skipped_step_says_nothing() -> None:
    out = io.StringIO()
    reporter = PromotionReporter(out, {})
    tasks = graph_of(2)
    reporter.initialize(tasks, ["promote"])
    try:
        raise KeyError("boom")
    except KeyError as error:
        reporter.add_failure(tasks["render:n0"], TaskError("Python Task error", error))
    reporter.add_failure(tasks["encrypt:n0"], UnmetDependency("render:n0"))
    reporter.add_failure(tasks["render:n1"], TaskFailed("patches/n1.yaml:3: bad"))
    reporter.complete_run()
    text = out.getvalue()
    assert "ERROR n0 (render) (a bug in the pipeline, please report it):" in text
    assert "Traceback" in text and "KeyError" in text
    failed = [line for line in text.splitlines() if line.startswith("FAILED")]
    assert failed == ["FAILED n1 (render): patches/n1.yaml:3: bad"]
    assert "encrypt" not in text
    assert "2 failed (n0, n1)" in lines(text)[-1]


# --- doit, plain mode (the fixtures set CI=true and capture output: no terminal) ---------------


def test_noop_prints_only_the_summary(promoted: Repo) -> None:
    result = promoted.doit()
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout + result.stderr)
    assert len(out) == 1, out
    assert out[0].startswith("promoted 0 of 6 nodes · 6 up to date · 0 sops runs · ")
    assert ESC not in result.stdout + result.stderr


def test_one_node_change_is_one_line_naming_the_patch(promoted: Repo) -> None:
    edit(promoted, "patches/cp1.yaml", "hostname: {{ node.name }}", "hostname: {{ node.name }}-renamed")
    result = promoted.doit()
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout + result.stderr)
    assert out[0] == "cp1: patches/cp1.yaml changed -> artefact rewritten (data key kept: only changed values)"
    assert out[1].startswith("promoted 1 of 6 nodes (cp1) · 5 up to date · ")
    assert len(out) == 2, out


def test_same_documents_say_the_artefact_was_kept(promoted: Repo) -> None:
    # The patch now also sets what the base config already holds: new intent, same documents.
    edit(promoted, "patches/w1.yaml", "machine:\n", "machine:\n  install:\n    disk: /dev/sda\n")
    result = promoted.doit(check=True)
    out = lines(result.stdout)
    assert out[0] == "w1: patches/w1.yaml changed -> same documents, artefact kept"
    assert out[1].startswith("promoted 0 of 6 nodes · 1 unchanged (w1) · 5 up to date · ")
    assert len(out) == 2, out
    assert promoted.git("status", "--porcelain", "encrypted/") in ("", " M encrypted/ledger.json\n",
                                                                   "M  encrypted/ledger.json\n")


def test_failure_is_one_line_and_exit_1(promoted: Repo) -> None:
    with (promoted.path / "patches/w2.yaml").open("a") as handle:
        handle.write("  extra: {{ no_such_variable }}\n")
    result = promoted.doit()
    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout + result.stderr
    failures = [line for line in lines(text) if "FAILED" in line]
    assert len(failures) == 1, text
    assert failures[0].startswith("FAILED w2 (render): patches/w2.yaml:")
    assert "no_such_variable" in failures[0]
    assert "Traceback" not in text
    assert "1 failed (w2)" in lines(result.stdout)[-1]
    assert len(lines(text)) == 2, text


def test_parallel_run_reports_each_node_with_its_trigger(promoted: Repo) -> None:
    edit(promoted, "patches/resolvers.yaml", "9.9.9.9", "9.9.9.10")
    result = promoted.doit("-n", "2")
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    nodes = sorted(line.split(":", 1)[0] for line in out[:-1])
    assert nodes == ["cp1", "cp2", "cp3", "w1", "w2", "w3"], out
    kept_key = ": patches/resolvers.yaml changed -> artefact rewritten (data key kept: only changed values)"
    assert all(line.endswith(kept_key) for line in out[:-1])
    runs = len(promoted.sops_runs())
    assert out[-1].startswith("promoted 6 of 6 nodes (cp1, cp2, cp3, w1, w2, w3) · 0 up to date · ")
    assert f"· {runs} sops runs ·" in out[-1]  # counted in the worker processes, reported by the parent


def test_threaded_run_counts_each_sops_process_once(promoted: Repo) -> None:
    edit(promoted, "patches/resolvers.yaml", "9.9.9.9", "9.9.9.11")
    result = promoted.doit("-n", "3", "-P", "thread")
    assert result.returncode == 0, result.stderr
    assert f"· {len(promoted.sops_runs())} sops runs ·" in lines(result.stdout)[-1]


def test_doit_console_reporter_stays_available(promoted: Repo) -> None:
    result = promoted.doit("-r", "console")
    assert result.returncode == 0, result.stderr
    assert "-- encrypt:cp1" in result.stdout


# --- a terminal: the progress bar -----------------------------------------------------------------


def run_in_terminal(repo: Repo, env: dict[str, str], *args: str) -> str:
    """Run doit with its output on a pseudo-terminal (`script`), return what the terminal got."""
    command = " ".join(shlex.quote(part) for part in (sys.executable, "-m", "doit", *args))
    script = shutil.which("script")
    assert script, "`script` (util-linux/bsdutils) is needed to give doit a terminal"
    result = subprocess.run([script, "-qc", command, "/dev/null"], cwd=repo.path, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_terminal_shows_a_progress_bar_and_ci_does_not(promoted: Repo) -> None:
    assert len(("cp1", "cp2", "cp3", "w1", "w2", "w3")) > PROGRESS_THRESHOLD  # every node is redone below
    terminal = {key: value for key, value in promoted.env.items() if key != "CI"}
    terminal.update(TERM="xterm", COLUMNS="100")

    edit(promoted, "patches/resolvers.yaml", "9.9.9.9", "9.9.9.12")
    shown = run_in_terminal(promoted, terminal)
    assert HIDE_CURSOR in shown, shown
    assert "nodes" in shown and "promoted 6 of 6 nodes" in shown

    edit(promoted, "patches/resolvers.yaml", "9.9.9.12", "9.9.9.13")
    plain = run_in_terminal(promoted, {**terminal, "CI": "true"})
    assert ESC not in plain, repr(plain)
    assert "promoted 6 of 6 nodes" in plain
    assert len(lines(plain)) == 7


def test_terminal_noop_is_one_line_without_a_bar(promoted: Repo) -> None:
    terminal = {key: value for key, value in promoted.env.items() if key != "CI"}
    terminal.update(TERM="xterm")
    shown = run_in_terminal(promoted, terminal)
    assert HIDE_CURSOR not in shown
    assert len(lines(shown)) == 1 and "promoted 0 of 6 nodes" in shown


# --- doit run again and again in one process (what `doit watch` does) -----------------------------


def test_reports_do_not_leak_between_runs_in_one_process(promoted: Repo, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    from doit.cmd_base import DodoTaskLoader
    from doit.doit_cmd import DoitMain


    for key in [key for key in os.environ if key.startswith(("SOPS_", "PROMOTE_", "XDG_"))]:
        monkeypatch.delenv(key)
    for key, value in promoted.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(promoted.path)
    monkeypatch.setattr(sys, "path", [str(promoted.path), *sys.path])

    report = tmp_path / "report.txt"

    def run() -> list[str]:
        # Each run passes through the run entry, which starts a new session: nothing carries over.
        code = DoitMain(DodoTaskLoader(), config_filenames=("pyproject.toml",)).run(["-o", str(report)])
        text = report.read_text()
        assert code == 0, text
        return lines(text)

    first = run()
    assert len(first) == 1 and first[0].startswith("promoted 0 of 6 nodes · 6 up to date · 0 sops runs")

    edit(promoted, "patches/cp2.yaml", "hostname: {{ node.name }}", "hostname: {{ node.name }}-b")
    second = run()
    assert second[0] == "cp2: patches/cp2.yaml changed -> artefact rewritten (data key kept: only changed values)"
    assert second[1].startswith("promoted 1 of 6 nodes (cp2) · 5 up to date · ")
    assert len(second) == 2

    third = run()
    assert len(third) == 1 and third[0].startswith("promoted 0 of 6 nodes · 6 up to date · 0 sops runs")


# --- a 200-node cluster ---------------------------------------------------------------------------


def big_repo(base: Path, count: int) -> Repo:
    """A cluster repo like the example, with ``count`` nodes, each with its own patch."""
    path, home = base / "repo", base / "home"
    (path / "patches").mkdir(parents=True)
    home.mkdir()
    for name in EXAMPLE_FILES:
        if name not in ("cluster.yaml", "patches"):
            shutil.copy2(PROJECT / name, path / name)
    shutil.copy2(PROJECT / "patches" / "resolvers.yaml", path / "patches" / "resolvers.yaml")
    names = [f"cp{i}" for i in range(1, 4)] + [f"w{i:03d}" for i in range(1, count - 2)]
    entries = []
    for index, name in enumerate(names):
        role = "controlplane" if name.startswith("cp") else "worker"
        entries.append(f"  {name}: {{role: {role}, address: 10.0.{index // 250}.{index % 250 + 1}}}")
        (path / "patches" / f"{name}.yaml").write_text(
            "machine:\n  network:\n    hostname: {{ node.name }}\n"
            "    interfaces:\n      - interface: eth0\n        addresses: [{{ node.address }}/16]\n")
    (path / "cluster.yaml").write_text(
        "cluster:\n  name: fleet\n  endpoint: https://10.0.255.1:6443\n"
        "  talosVersion: v1.11.5\n  kubernetesVersion: v1.34.1\n  installDisk: /dev/sda\n"
        "patches: [resolvers.yaml]\nnodes:\n" + "\n".join(entries) + "\n")
    repo = Repo(path, home, _clean_env(home, base / "sops.log"))
    repo.git("init", "-q", "-b", "main")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "intent")
    return repo


def test_200_node_cluster_noop_is_at_most_three_lines(tmp_path: Path) -> None:
    repo = big_repo(tmp_path, 200)
    first = repo.doit("-n", str(min(4, os.cpu_count() or 1)), timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = lines(first.stdout)[-1]
    assert summary.startswith("promoted 200 of 200 nodes (cp1, cp2, cp3, w001, "), summary
    assert "+192 more" in summary
    new_line = ": new -> artefact rewritten (fresh data key: new artefact)"
    assert len([line for line in lines(first.stdout) if line.endswith(new_line)]) == 200

    noop = repo.doit()
    assert noop.returncode == 0, noop.stderr
    out = lines(noop.stdout + noop.stderr)
    assert len(out) <= 3, out
    assert out[-1].startswith("promoted 0 of 200 nodes · 200 up to date · 0 sops runs · ")
    assert repo.sops_runs() == []
