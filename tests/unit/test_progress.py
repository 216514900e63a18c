"""A progress bar written to a log (a file, a pipe, CI) shows progress while it runs."""

import io

from rich.console import Console
from rich.progress import BarColumn, TextColumn

from sightline.progress import progress_bar


def _log_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=100), out


def _lines(out: io.StringIO) -> list[str]:
    """The printed lines (rich ends a bar on a non-terminal with an empty line)."""
    return [line for line in out.getvalue().splitlines() if line.strip()]


def test_a_log_shows_each_step_while_the_bar_runs_not_only_at_its_end():
    console, out = _log_console()
    with progress_bar(TextColumn("[bold]fresh starts[/]"), BarColumn(), TextColumn("{task.description}"),
                      console=console, every_s=0) as bar:
        task = bar.add_task("", total=3)
        bar.update(task, advance=1, description="start 1: ok")
        assert "fresh starts" in out.getvalue() and "start 1: ok" in out.getvalue()
        bar.update(task, advance=1, description="start 2: CRASHED")
        assert "start 2: CRASHED" in out.getvalue()
        bar.advance(task)
    assert [line.split()[-1] for line in _lines(out)] == ["ok", "CRASHED", "CRASHED"]


def test_frequent_updates_are_thinned_and_the_last_state_is_always_printed():
    console, out = _log_console()
    with progress_bar(TextColumn("{task.description}"), console=console, every_s=3600) as bar:
        task = bar.add_task("", total=1000)
        for i in range(1, 500):
            bar.update(task, completed=i, description=f"slice {i}")
    assert _lines(out) == ["slice 1", "slice 499"]


def test_a_finished_task_is_printed_once_even_when_updated_after():
    console, out = _log_console()
    with progress_bar(TextColumn("{task.description}"), console=console, every_s=3600) as bar:
        task = bar.add_task("", total=2)
        bar.update(task, completed=1, description="half")
        bar.update(task, completed=2, description="done")
        bar.update(task, description="done again")
    assert _lines(out) == ["half", "done"]


def test_a_terminal_gets_rich_live_bar_and_no_extra_lines():
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, force_interactive=True)
    with progress_bar(TextColumn("{task.description}"), console=console, every_s=0, auto_refresh=False) as bar:
        task = bar.add_task("", total=2)
        bar.update(task, completed=1, description="half")
    # rich's live bar redraws in place (cursor controls), not a line per update
    assert "\x1b[" in out.getvalue()
    assert out.getvalue().count("half") == 1


def test_a_long_row_is_one_whole_line_with_the_bar_as_a_percentage():
    console, out = _log_console()
    status = "start 1: ok, " + ", ".join(f"c{c} 117.0 req/s p95 108.3 ms" for c in (8, 16, 32, 64))
    with progress_bar(TextColumn("[bold]fresh starts[/]"), BarColumn(), TextColumn("{task.description}"),
                      console=console, every_s=0) as bar:
        task = bar.add_task("", total=10)
        bar.update(task, advance=1, description=status)
    assert _lines(out) == [f"fresh starts 10% {status}"]
