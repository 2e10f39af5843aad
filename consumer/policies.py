"""The sample Consumer's policy rules (``auth_strategy = keystone``). Their target is the
consumer's project (``[consumer] keystone_alarm_project_id``): a token scoped to it (the
alarm owner's: Aodh's ``trust+http`` actions carry a trust-scoped token of the alarm's
project), or an admin's, may deliver alarms and read or clear what was received."""

from doctor.policy import ADMIN_OR_OWNER, rule

ALARMS_DELIVER = "consumer:alarms:deliver"
FAILURES_LIST = "consumer:failures:list"
FAILURES_DELETE = "consumer:failures:delete"

RULES = [
    rule(ALARMS_DELIVER, ADMIN_OR_OWNER, "Deliver an alarm action (Aodh's trust+http).",
         [("POST", "{path}")]),
    rule(FAILURES_LIST, ADMIN_OR_OWNER, "List the alarms received.",
         [("GET", "/failures")]),
    rule(FAILURES_DELETE, ADMIN_OR_OWNER, "Forget the alarms received.",
         [("DELETE", "/failures")]),
]

ENDPOINTS = {
    "failure": ALARMS_DELIVER,
    "list_failures": FAILURES_LIST,
    "clear_failures": FAILURES_DELETE,
}
