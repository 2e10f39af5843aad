"""The VIM server's policy rules (``auth_strategy = keystone``): all admin, as Tacker keeps
VIM registration to the operators."""

from doctor.policy import ADMIN, rule

VIMS_CREATE = "vim:vims:create"
VIMS_READ = "vim:vims:read"
VIMS_UPDATE = "vim:vims:update"
VIMS_DELETE = "vim:vims:delete"
STATUS_REPORT = "vim:status:report"
MONITORING_READ = "vim:monitoring:read"

RULES = [
    rule(VIMS_CREATE, ADMIN, "Register a VIM.", [("POST", "/v1/vims")]),
    rule(VIMS_READ, ADMIN, "List and show VIMs.",
         [("GET", "/v1/vims"), ("GET", "/v1/vims/{id}")]),
    rule(VIMS_UPDATE, ADMIN, "Change a VIM.",
         [("PATCH", "/v1/vims/{id}"), ("PUT", "/v1/vims/{id}")]),
    rule(VIMS_DELETE, ADMIN, "Remove a VIM.", [("DELETE", "/v1/vims/{id}")]),
    rule(STATUS_REPORT, ADMIN, "Report a monitor's verdict on a VIM.",
         [("POST", "/v1/vims/{id}/status")]),
    rule(MONITORING_READ, ADMIN, "Read the monitor manager's counters.",
         [("GET", "/v1/monitoring")]),
]

ENDPOINTS = {
    "register": VIMS_CREATE,
    "list_vims": VIMS_READ,
    "show": VIMS_READ,
    "change": VIMS_UPDATE,
    "remove": VIMS_DELETE,
    "report": STATUS_REPORT,
    "monitoring": MONITORING_READ,
}
