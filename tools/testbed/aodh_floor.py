"""How fast Aodh alone fires N event alarms from one published batch (no Nova load).

    eval "$(tools/testbed/openstack.sh env)"
    .venv/bin/python tools/testbed/aodh_floor.py --alarms 50 --chunk 50 --rounds 3

Each round: a new project, N alarms created with aodhclient pointing at a local receiver,
Aodh's event-alarm cache waited out, then N ``compute.instance.update`` events published to
``alarm.all`` in chunks of ``--chunk``; prints first and last POST after the publish.
Bounded: every round waits at most 20 s for its POSTs.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from doctor.events import instance_update  # noqa: E402
from notifier.aodh import AodhPublisher  # noqa: E402
from scenario.alarms import (  # noqa: E402
    aodh_cache_ttl_s,
    aodh_client,
    create_vm_alarms,
    wait_alarms_seen,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alarms", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=50, help="events per published message")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    posts: list[float] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(time.time())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/failure"
    publisher = AodhPublisher(os.environ["DOCTOR_TRANSPORT_URL"])
    try:
        for _ in range(args.rounds):
            project = uuid.uuid4().hex
            aodh = aodh_client(os.environ["DOCTOR_AODH_URL"], project)
            vms = [str(uuid.uuid4()) for _ in range(args.alarms)]
            alarms = create_vm_alarms(aodh, vms, url)
            wait_alarms_seen(time.monotonic(), aodh_cache_ttl_s(openstack=True))
            posts.clear()
            events = [instance_update(vm, "error", "compute1", project) for vm in vms]
            start = time.time()
            for i in range(0, len(events), args.chunk):
                publisher.publish(events[i:i + args.chunk])
            deadline = start + 20
            while len(posts) < len(vms) and time.time() < deadline:
                time.sleep(0.005)
            got = sorted(posts)
            print(f"{args.alarms} alarms, chunks of {args.chunk}: {len(got)} POSTs, first "
                  f"{(got[0] - start) * 1000:.0f} ms, last {(got[-1] - start) * 1000:.0f} ms"
                  if got else f"{args.alarms} alarms: no POST within 20 s")
            for alarm in alarms:
                aodh.alarm.delete(alarm)
    finally:
        publisher.close()
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
