"""Hostile-input fuzz against the real Triton server, for longer than CI runs it.

The same rounds as ``tests/integration/test_hostile_input.py`` (random, mutated and lying
JPEG/PNG bytes, extreme geometry, random request parameters, up to four frames per request,
sent at once with four good requests so they share dynamic batches), but as many as asked
and from any seed. Stops at the first round that breaks a rule (a good request not served,
a hostile one failing with anything but INVALID_ARG and a reason other than ``internal``, or
the server not live) and prints hypothesis's smallest example of it. Writes nothing.

    .venv/bin/python bench/fuzz_serving.py --rounds 5000 --seed 7
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import tritonclient.grpc as grpcclient  # noqa: E402
from hostile_frames import GOOD, REQUESTS, Tally, fuzz_round, send  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from tables import exit_on_sigterm  # noqa: E402

from sightline import modelspec  # noqa: E402
from sightline.runtime import DEFAULT_MODEL_REPOSITORY, ServerOptions, TritonServer, free_port  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000, help="hypothesis examples (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="sightline-fuzz-") as state:
        options = ServerOptions(model_repository=DEFAULT_MODEL_REPOSITORY, state_dir=Path(state), http_port=free_port(),
                                grpc_port=free_port(), metrics_port=free_port(), ready_timeout_s=180)
        with TritonServer(options) as server:

            @seed(args.seed)
            @settings(max_examples=args.rounds, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
            @given(REQUESTS)
            def rounds(hostile):
                fuzz_round(server.grpc_url, hostile, tally)

            started = time.monotonic()
            rounds()
            client = grpcclient.InferenceServerClient(url=server.grpc_url)
            try:
                live = client.is_server_live() and client.is_model_ready(modelspec.ENSEMBLE_NAME)
            finally:
                client.close()
            served = send(server.grpc_url, [GOOD], {"camera_id": "cam-1"}) == ("ok", "")
    print(f"hostile-input fuzz, seed {args.seed}: {tally}; {time.monotonic() - started:.0f} s; "
          f"server live after it: {live}, a good frame served: {served}")
    return 0 if live and served else 1


if __name__ == "__main__":
    exit_on_sigterm()
    sys.exit(main())
