"""``doctor-notifier``: the embedded Notifier as a daemon (Aodh's alarm API, event alarms)."""

from __future__ import annotations

import argparse
import logging
import sys

from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from doctor import keystone
from doctor.daemon import Daemon, daemon_parser
from notifier.config import NotifierConfig

LOG = logging.getLogger("notifier")

EXAMPLES = """\
what it serves (port 8042, as Aodh):
  /v2/alarms ...      Aodh's alarm API for event alarms, as python-aodhclient uses it.
                      auth_strategy = token (the default): the caller is whoever its
                      X-Auth-Token is: [notifier] token (the service: admin of project
                      service) or a caller of api_tokens_file (one project each).
                      auth_strategy = noauth: the caller is taken from X-User-Id,
                      X-Project-Id, X-Roles (Aodh's noauth mode; aodhclient:
                      --os-auth-type aodh-noauth).
  POST /v1/events     a JSON list of events in Ceilometer's format (what the Inspector
                      publishes); answered 202 once stored (it survives a crash),
                      evaluated asynchronously. Only the service's token
                      (X-Auth-Token), unless auth_strategy = noauth.
  A matching event fires the alarm: POST <alarm action URL> with Aodh's body
  {alarm_name, alarm_id, severity, previous, current, reason, reason_data}, signed
  with action_secret (X-Doctor-Signature: sha256=<hex HMAC-SHA256 of the body>).

examples:
  DOCTOR_NOTIFIER_TOKEN=... doctor-notifier --port 8042 --api-tokens-file /etc/doctor/api-tokens
  doctor-notifier --config-file /etc/doctor/doctor.conf

  OS_TOKEN=<the VNFM project's token in api_tokens_file> aodh --os-auth-type admin_token \\
      --os-endpoint http://127.0.0.1:8042 --aodh-endpoint http://127.0.0.1:8042 \\
      alarm create --type event --name vm1-error --event-type compute.instance.update \\
      --query "traits.instance_id=<vm uuid>;traits.state=error" \\
      --alarm-action http://127.0.0.1:12346/failure --repeat-actions false

config file (INI; every option below also goes in [notifier]; secrets only there or in
DOCTOR_NOTIFIER_<OPTION>):
  [notifier]
  port = 8042
  token = <a long random string>
  api_tokens_file = /etc/doctor/api-tokens

api_tokens_file (mode 0600), one section per caller:
  [vnfm]
  token = <a long random string>
  user_id = vnfm
  project_id = demo
  roles = member
  database = sqlite:////var/lib/doctor/notifier.db
  action_retry_for_s = 60
"""


def build_parser() -> argparse.ArgumentParser:
    return daemon_parser(
        "doctor-notifier", NotifierConfig,
        "The embedded Notifier: keeps event alarms (Aodh's /v2/alarms API and semantics), "
        "evaluates the events posted to /v1/events against them and POSTs the alarm actions, "
        "retrying while the Consumer is down. Stops on SIGTERM or Ctrl-C.", EXAMPLES)


def main(argv: list[str] | None = None) -> int:
    daemon = Daemon(build_parser(), argv)
    config = daemon.load(NotifierConfig, "notifier")
    from doctor.config import ConfigError
    from notifier.api import create_app
    from notifier.caller import load_api_tokens
    from notifier.embedded import EmbeddedNotifier

    callers = []
    if config.api_tokens_file and config.auth_strategy == "token":
        try:
            callers = load_api_tokens(config.api_tokens_file, config.token)
        except ConfigError as exc:
            daemon.fail(2, str(exc))
        LOG.info("%d /v2 callers in %d projects from %s", len(callers),
                 len({caller.project_id for _, caller in callers}), config.api_tokens_file)

    try:
        service = EmbeddedNotifier(config)
    except ArgumentError as exc:
        daemon.fail(2, f"[notifier] database: {exc}")
    except (SQLAlchemyError, OSError) as exc:
        daemon.fail(1, f"[notifier] database: cannot open the alarm store: "
                       f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}")
    daemon.on_stop(service.stop)
    server = daemon.listen(create_app(service, config.token, config.auth_strategy, callers,
                                      keystone.settings_of(config)),
                           config.host, config.port, what="[notifier] host/port: ",
                           threads=16, name="notifier")
    service.listening_at(config.host, server.port)  # alarm actions may not target it
    service.start()
    if config.nova_transport_url:
        from doctor import coordination
        from doctor.nova_listener import NovaListener

        pool = config.nova_listener_pool or \
            f"doctor-notifier-{coordination.local_hostname()}-{server.port}"
        listener = NovaListener(config.nova_transport_url, service.submit, pool=pool)
        listener.start()
        daemon.on_stop(listener.stop)
    LOG.info("doctor-notifier serving Aodh's alarm API on %s", server.url)
    daemon.register("Notifier", config)
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
