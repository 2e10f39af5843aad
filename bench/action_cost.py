"""What one alarm action POST costs the notifier: CPU per POST and wall time of a fan-out.

Run from the repository: ``python -m bench.action_cost [--posts 1000] [--repeats 5]``,
briefly and on a machine as quiet as can be. N signed POSTs (the body of a real alarm,
X-Doctor-Signature, X-OpenStack-Request-Id) go to one trivial receiver: an asyncio server
in its own process that answers each with 200 and no body, so what is measured is the
sender. The sender's CPU is ``time.process_time`` of this process (all its threads), over
the fan-out alone: each sender is warmed first (connections opened), as a running notifier's
is. Each figure is the median of ``--repeats`` runs.

Senders:

``dispatcher`` ``notifier.actions.ActionDispatcher`` as it is (``--per-target`` x 4/3
              workers), fed through ``dispatch_stored`` as the embedded notifier feeds it.
``threads``   the thread-pool design's core alone: ``--per-target`` threads, each one
              blocking ``doctor.http.HttpClient`` POST at a time (kept-alive per thread).
``aiohttp``   aiohttp's client on one event loop, a pool of kept-alive connections, at most
              ``--per-target`` POSTs in flight (if aiohttp is installed).
``asynchttp`` ``doctor.asynchttp.AsyncHttpClient`` on one event loop, the same bound.
``streams``   a bare asyncio-streams HTTP/1.1 sender on one event loop, the same bound:
              the floor of what asyncio can do here (happy path only, no error handling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.report import emit
from doctor.signing import SIGNATURE_HEADER, sign
from doctor.tables import table

PROG = "python -m bench.action_cost"
SECRET = "bench-secret"
SENDERS = ("dispatcher", "threads", "aiohttp", "asynchttp", "streams")


# -- the receiver: its own process, as cheap as can be --------------------------------------

async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _receive(port_out: Any) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_answer, "127.0.0.1", 0, backlog=512)
        port_out.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


# -- what is sent --------------------------------------------------------------------------

def alarm_body(i: int) -> bytes:
    """About the size of a real alarm action's body."""
    return json.dumps({
        "alarm_id": str(uuid.uuid4()), "alarm_name": f"vm-{i}-down", "severity": "critical",
        "previous": "ok", "current": "alarm", "reason": "Event <id=...> hits the query",
        "reason_data": {"type": "event", "event": {
            "event_type": "compute.instance.update", "message_id": str(uuid.uuid4()),
            "generated": "2026-11-21T10:00:00.000000", "traits": [
                ["instance_id", 1, f"vm-{i}"], ["state", 1, "error"],
                ["host", 1, "compute-1"], ["project_id", 1, "p1"]]}}}).encode()


# -- the senders: each ``run(url, bodies)`` sends every body once, warm -----------------------

class DispatcherSender:
    """``notifier.actions.ActionDispatcher`` itself, fed as the embedded notifier feeds it
    (``dispatch_stored``, told of each final action)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, url: str, bodies: list[bytes]) -> Any:
        from notifier.actions import ActionDispatcher
        from notifier.store import StoredAction

        dispatcher = ActionDispatcher(timeout_s=5, workers=self.workers, secret=SECRET).start()
        done = threading.Semaphore(0)

        def send(batch: list[bytes]) -> None:
            actions = [StoredAction(f"req-{uuid.uuid4()}", "a", None, url, body.decode(), 0.0)
                       for body in batch]
            dispatcher.dispatch_stored(actions, lambda request_id: done.release())
            for _ in batch:
                done.acquire()

        try:
            send(bodies[:self.workers * 2])
            return _measure(lambda: send(bodies))
        finally:
            dispatcher.stop(1)


class ThreadsSender:
    """The thread-pool design's core: ``per_target`` threads, one blocking POST each through
    ``doctor.http.HttpClient`` (a kept-alive connection per thread)."""

    def __init__(self, per_target: int) -> None:
        self.per_target = per_target

    def run(self, url: str, bodies: list[bytes]) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        from doctor.http import HttpClient

        client = HttpClient(5, headers={"Content-Type": "application/json"})

        def post(body: bytes) -> None:
            headers = {"X-OpenStack-Request-Id": f"req-{uuid.uuid4()}",
                       SIGNATURE_HEADER: sign(SECRET, body)}
            assert client.post(url, data=body, headers=headers).status == 200

        with ThreadPoolExecutor(self.per_target) as pool:
            list(pool.map(post, bodies[:self.per_target * 2]))
            took = _measure(lambda: list(pool.map(post, bodies)))
        client.close()
        return took


def _measure(fan_out: Callable[[], None]) -> Any:
    cpu, wall = time.process_time(), time.perf_counter()
    fan_out()
    return time.process_time() - cpu, time.perf_counter() - wall


class AiohttpSender:
    def __init__(self, per_target: int) -> None:
        self.per_target = per_target

    def run(self, url: str, bodies: list[bytes]) -> Any:
        import aiohttp

        async def main() -> Any:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.per_target)
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                bound = asyncio.Semaphore(self.per_target)

                async def post(body: bytes) -> None:
                    async with bound:
                        headers = {"Content-Type": "application/json",
                                   "X-OpenStack-Request-Id": f"req-{uuid.uuid4()}",
                                   SIGNATURE_HEADER: sign(SECRET, body)}
                        async with session.post(url, data=body, headers=headers) as answer:
                            await answer.read()
                            assert answer.status == 200

                await asyncio.gather(*(post(b) for b in bodies[:self.per_target * 2]))
                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.gather(*(post(b) for b in bodies))
                return time.process_time() - cpu, time.perf_counter() - wall

        return asyncio.run(main())


class StreamsSender:
    def __init__(self, per_target: int) -> None:
        self.per_target = per_target

    def run(self, url: str, bodies: list[bytes]) -> Any:
        host, port = url.split("//")[1].split("/")[0].split(":")

        async def main() -> Any:
            idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            bound = asyncio.Semaphore(self.per_target)

            async def post(body: bytes) -> None:
                async with bound:
                    reader, writer = idle.pop() if idle else \
                        await asyncio.open_connection(host, int(port))
                    head = (f"POST /failure HTTP/1.1\r\nHost: {host}:{port}\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                            f"X-OpenStack-Request-Id: req-{uuid.uuid4()}\r\n"
                            f"{SIGNATURE_HEADER}: {sign(SECRET, body)}\r\n\r\n")
                    writer.write(head.encode() + body)
                    answer = await reader.readuntil(b"\r\n\r\n")
                    assert answer.startswith(b"HTTP/1.1 200")
                    idle.append((reader, writer))

            await asyncio.gather(*(post(b) for b in bodies[:self.per_target * 2]))
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(post(b) for b in bodies))
            took = time.process_time() - cpu, time.perf_counter() - wall
            for _, writer in idle:
                writer.close()
            return took

        return asyncio.run(main())


class AsyncHttpSender:
    def __init__(self, per_target: int) -> None:
        self.per_target = per_target

    def run(self, url: str, bodies: list[bytes]) -> Any:
        from doctor.asynchttp import AsyncHttpClient

        async def main() -> Any:
            client = AsyncHttpClient(5, headers={"Content-Type": "application/json"})
            bound = asyncio.Semaphore(self.per_target)

            async def post(body: bytes) -> None:
                async with bound:
                    headers = {"X-OpenStack-Request-Id": f"req-{uuid.uuid4()}",
                               SIGNATURE_HEADER: sign(SECRET, body)}
                    assert (await client.post(url, body, headers)).status == 200

            await asyncio.gather(*(post(b) for b in bodies[:self.per_target * 2]))
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(post(b) for b in bodies))
            took = time.process_time() - cpu, time.perf_counter() - wall
            await client.close()
            return took

        return asyncio.run(main())


def sender(name: str, per_target: int) -> Any:
    workers = max(1, per_target * 4 // 3)
    if name == "threads":
        return ThreadsSender(per_target)
    if name == "dispatcher":
        return DispatcherSender(workers)
    if name == "aiohttp":
        return AiohttpSender(per_target)
    if name == "asynchttp":
        return AsyncHttpSender(per_target)
    return StreamsSender(per_target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1000, help="POSTs per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per sender (median)")
    parser.add_argument("--per-target", type=int, default=12,
                        help="POSTs in flight to the receiver at most")
    parser.add_argument("--senders", default=",".join(SENDERS),
                        help=f"comma-separated, of {', '.join(SENDERS)}")
    parser.add_argument("--json", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.senders.split(",") if n.strip()]
    if not names or set(names) - set(SENDERS):
        raise SystemExit(f"{PROG}: error: --senders {args.senders!r}: some of "
                         f"{', '.join(SENDERS)}")
    if "aiohttp" in names:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            names.remove("aiohttp")
    context = multiprocessing.get_context("spawn")
    port_in, port_out = context.Pipe(duplex=False)
    receiver = context.Process(target=_receive, args=(port_out,), daemon=True)
    receiver.start()
    try:
        url = f"http://127.0.0.1:{port_in.recv()}/failure"
        bodies = [alarm_body(i) for i in range(args.posts)]
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for _ in range(args.repeats):  # interleaved, so a busy moment hits every sender
            for name in names:
                samples[name].append(sender(name, args.per_target).run(url, bodies))
    finally:
        receiver.terminate()
        receiver.join(5)
    result: dict[str, Any] = {"posts": args.posts, "repeats": args.repeats,
                              "per_target": args.per_target, "senders": {}}
    rows = []
    for name in names:
        cpu = statistics.median(s[0] for s in samples[name])
        wall = statistics.median(s[1] for s in samples[name])
        result["senders"][name] = {
            "cpu_us_per_post": round(cpu / args.posts * 1e6, 1),
            "wall_ms": round(wall * 1000, 1),
            "cpu_us_per_post_runs": [round(s[0] / args.posts * 1e6, 1) for s in samples[name]],
            "wall_ms_runs": [round(s[1] * 1000, 1) for s in samples[name]]}
        rows.append([name, f"{cpu / args.posts * 1e6:.0f}", f"{wall * 1000:.0f}",
                     f"{args.posts / wall:.0f}"])
    emit(result, [f"{args.posts} signed alarm POSTs to one local receiver, at most "
                  f"{args.per_target} in flight; medians of {args.repeats} runs\n"
                  + table(["sender", "CPU µs/POST", "wall ms", "POSTs/s"], rows)], args.json)


if __name__ == "__main__":
    main()
