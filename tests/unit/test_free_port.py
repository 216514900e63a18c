"""free_port: every port a process is handed is its own."""

from __future__ import annotations


def test_free_port_never_hands_out_the_same_port_twice(monkeypatch):
    # the OS offered Triton's gRPC port again for its metrics port in a fresh make test
    from sightline import runtime

    offered = iter([52000, 52000, 52000, 52001])

    class Probe:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(runtime, "_HANDED_OUT", set())
    monkeypatch.setattr(runtime.socket, "socket", lambda *args: Probe())
    assert [runtime.free_port(), runtime.free_port()] == [52000, 52001]
