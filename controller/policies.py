"""The embedded Controller's policy rules (``auth_strategy = keystone``), after Nova's:
host changes (force-down), server state resets and migrations are admin; a project's own
servers are its own (admin_or_owner), and only an admin sees every project's."""

from doctor.policy import ADMIN, ADMIN_OR_OWNER, IN_ROUTE, rule

SERVERS_LIST = "controller:servers:list"
SERVERS_LIST_ALL = "controller:servers:list_all_projects"
SERVERS_SHOW = "controller:servers:show"
SERVERS_CREATE = "controller:servers:create"
SERVERS_DELETE = "controller:servers:delete"
SERVERS_RESET_STATE = "controller:servers:reset_state"
SERVERS_MIGRATE = "controller:servers:migrate"
HOSTS_LIST = "controller:hosts:list"
HOSTS_UPDATE = "controller:hosts:update"

RULES = [
    rule(SERVERS_LIST, ADMIN_OR_OWNER, "List servers (a project's own).",
         [("GET", "/v1/servers")]),
    rule(SERVERS_LIST_ALL, ADMIN, "List every project's servers, or a host's.",
         [("GET", "/v1/servers")]),
    rule(SERVERS_SHOW, ADMIN_OR_OWNER, "Show a server.", [("GET", "/v1/servers/{id}")]),
    rule(SERVERS_CREATE, ADMIN_OR_OWNER, "Create a server in a project.",
         [("POST", "/v1/servers")]),
    rule(SERVERS_DELETE, ADMIN_OR_OWNER, "Delete a server.",
         [("DELETE", "/v1/servers/{id}")]),
    rule(SERVERS_RESET_STATE, ADMIN, "Reset a server's state (reset-state action), or many "
         "servers' at once.",
         [("POST", "/v1/servers/{id}/action"), ("POST", "/v1/servers/reset-state")]),
    rule(SERVERS_MIGRATE, ADMIN, "Migrate a server (migrate action).",
         [("POST", "/v1/servers/{id}/action")]),
    rule(HOSTS_LIST, ADMIN, "List hosts and whether they are forced down.",
         [("GET", "/v1/hosts")]),
    rule(HOSTS_UPDATE, ADMIN, "Force a host down or up.", [("PUT", "/v1/hosts/{name}")]),
]

# endpoint -> the rule checked before the route; routes check the object's project (and
# server_action its action's rule) themselves.
ENDPOINTS = {
    "list_servers": SERVERS_LIST,
    "show_server": SERVERS_SHOW,
    "create_server": SERVERS_CREATE,
    "delete_server": SERVERS_DELETE,
    "server_action": IN_ROUTE,  # reset_state or migrate, as the body says
    "reset_servers": SERVERS_RESET_STATE,
    "list_hosts": HOSTS_LIST,
    "update_host": HOSTS_UPDATE,
}
