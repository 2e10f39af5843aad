"""The Notifier's policy rules (``auth_strategy = keystone``), after Aodh's: an alarm belongs
to a project, and a token of that project may manage it (admin_or_owner); only an admin
sees, names and changes other projects' alarms (``notifier:alarms:all_projects``), and
only an admin posts events (``POST /v1/events``: the pipeline's services)."""

from doctor.policy import ADMIN, ADMIN_OR_OWNER, ANYONE, rule

VERSIONS_SHOW = "notifier:versions:show"
EVENTS_CREATE = "notifier:events:create"
ALARMS_CREATE = "notifier:alarms:create"
ALARMS_LIST = "notifier:alarms:list"
ALARMS_SHOW = "notifier:alarms:show"
ALARMS_UPDATE = "notifier:alarms:update"
ALARMS_DELETE = "notifier:alarms:delete"
ALARMS_ALL_PROJECTS = "notifier:alarms:all_projects"

RULES = [
    rule(VERSIONS_SHOW, ANYONE, "Show the API's version and the notifier's status.",
         [("GET", "/")]),
    rule(EVENTS_CREATE, ADMIN, "Post events in Ceilometer's format.",
         [("POST", "/v1/events")]),
    rule(ALARMS_CREATE, ADMIN_OR_OWNER, "Create an alarm in the token's project.",
         [("POST", "/v2/alarms")]),
    rule(ALARMS_LIST, ADMIN_OR_OWNER, "List or query alarms.",
         [("GET", "/v2/alarms"), ("POST", "/v2/query/alarms")]),
    rule(ALARMS_SHOW, ADMIN_OR_OWNER, "Show an alarm, its state or its history.",
         [("GET", "/v2/alarms/{alarm_id}"), ("GET", "/v2/alarms/{alarm_id}/state"),
          ("GET", "/v2/alarms/{alarm_id}/history")]),
    rule(ALARMS_UPDATE, ADMIN_OR_OWNER, "Change an alarm or its state.",
         [("PUT", "/v2/alarms/{alarm_id}"), ("PUT", "/v2/alarms/{alarm_id}/state")]),
    rule(ALARMS_DELETE, ADMIN_OR_OWNER, "Delete an alarm.",
         [("DELETE", "/v2/alarms/{alarm_id}")]),
    rule(ALARMS_ALL_PROJECTS, ADMIN, "See and manage every project's alarms, and create "
                                     "one in another project (Aodh's admin).",
         [("GET", "/v2/alarms"), ("POST", "/v2/alarms")]),
]

ENDPOINTS = {
    "root": VERSIONS_SHOW,
    "post_events": EVENTS_CREATE,
    "create_alarm": ALARMS_CREATE,
    "list_alarms": ALARMS_LIST,
    "query_alarms": ALARMS_LIST,
    "show_alarm": ALARMS_SHOW,
    "get_state": ALARMS_SHOW,
    "history": ALARMS_SHOW,
    "update_alarm": ALARMS_UPDATE,
    "put_state": ALARMS_UPDATE,
    "delete_alarm": ALARMS_DELETE,
}
