"""Triton's crash-handler line in its log, read as it grows (the supervisor's hang check)."""

from __future__ import annotations

from sightline.runtime import ServerOptions, TritonServer


def server(tmp_path) -> TritonServer:
    return TritonServer(ServerOptions(state_dir=tmp_path, http_port=1, grpc_port=2, metrics_port=3))


def test_the_signal_is_read_from_new_complete_lines_only(tmp_path):
    triton = server(tmp_path)
    assert triton.crash_signal() is None  # no log yet
    log = triton.log_path.open("a")
    log.write('I1201 05:18:07 http_server.cc:362] "Started Metrics Service"\n'
              'a stub said: Signal (11) received is not at the start of a line\n')
    log.flush()
    assert triton.crash_signal() is None
    log.write("corrupted double-linked list (not small)\nSignal (6) rec")  # the line is not finished
    log.flush()
    assert triton.crash_signal() is None
    log.write("eived.\n")
    log.flush()
    assert triton.crash_signal() == 6
    log.write("Signal (11) received.\n")  # the first fatal signal is the one that counts
    log.flush()
    assert triton.crash_signal() == 6
    log.close()
