"""``doctor-consumer``: the sample Consumer (VNFM side) that receives the alarm actions."""

from __future__ import annotations

import argparse
import sys

from consumer.config import ConsumerConfig
from doctor.daemon import Daemon, daemon_parser

EXAMPLES = """\
examples:
  doctor-consumer                                   # listens on 127.0.0.1:12346/failure
  doctor-consumer --host 0.0.0.0 --recovery recreate --controller-url http://127.0.0.1:12347
  doctor-consumer --config-file /etc/doctor/doctor.conf

Each alarm is logged as "doctor consumer notified at <epoch seconds>"; GET /failures
lists what was received.

config file (INI; every option below also goes in [consumer]):
  [consumer]
  port = 12346
  recovery = recreate
  controller_url = http://controller:12347
"""


def build_parser() -> argparse.ArgumentParser:
    return daemon_parser(
        "doctor-consumer", ConsumerConfig,
        "Receive the Notifier's alarm actions (POST /failure), log and keep them; optionally "
        "recreate the failed VMs on a healthy host.", EXAMPLES, duration=True)


def main(argv: list[str] | None = None) -> int:
    daemon = Daemon(build_parser(), argv)
    config = daemon.load(ConsumerConfig, "consumer")
    from consumer.sample import SampleConsumer
    from doctor.config import ConfigError

    try:
        consumer = SampleConsumer(config)
    except ConfigError as exc:  # keystone_cloud
        daemon.fail(2, str(exc))
    # Registered first: once the consumer answers, SIGTERM is handled at once (tooz's import
    # takes a moment and happens here).
    daemon.register("Consumer", config)
    try:
        consumer.start()
    except OSError as exc:
        daemon.fail(1, f"cannot listen on {config.host}:{config.port}: {exc}")
    daemon.on_stop(consumer.stop)
    return daemon.run(daemon.args.duration_s)


if __name__ == "__main__":
    sys.exit(main())
