"""The Inspector's policy rules (``auth_strategy = keystone``): all of them admin, as
OpenStack keeps host faults and the hypervisor view to the cloud's operators."""

from doctor.policy import ADMIN, rule

EVENTS_CREATE = "inspector:events:create"
NOTIFICATIONS_CREATE = "inspector:notifications:create"
HOSTS_READ = "inspector:hosts:read"
SERVICES_LIST = "inspector:services:list"

RULES = [
    rule(EVENTS_CREATE, ADMIN, "Report host faults (the monitors).",
         [("PUT", "/events"), ("POST", "/events")]),
    rule(NOTIFICATIONS_CREATE, ADMIN, "Post VM notifications (the controller).",
         [("POST", "/v1/events")]),
    rule(HOSTS_READ, ADMIN, "Read the hosts' states and the inspector's status.",
         [("GET", "/hosts"), ("GET", "/hosts/{name}"), ("GET", "/status")]),
    rule(SERVICES_LIST, ADMIN, "List the service list's members.",
         [("GET", "/v1/services")]),
]

# endpoint (the view function's name in inspector.api) -> rule
ENDPOINTS = {
    "take_events": EVENTS_CREATE,
    "take_notifications": NOTIFICATIONS_CREATE,
    "show_status": HOSTS_READ,
    "list_hosts": HOSTS_READ,
    "show_host": HOSTS_READ,
    "list_services": SERVICES_LIST,
}
